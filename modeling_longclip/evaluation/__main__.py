"""`python -m modeling_longclip.evaluation` runs `longclip-eval`."""

import sys

from .cli import main

sys.exit(main())
