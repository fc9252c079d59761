"""python -m modeling_longclip.features: the same as longclip-extract-text-features."""

import sys

from .cli import main

sys.exit(main())
