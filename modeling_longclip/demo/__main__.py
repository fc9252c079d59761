"""python -m modeling_longclip.demo: the main job on the embedded default (long_text_demo.py)."""

import sys

from .long_text_demo import main

sys.exit(main())
