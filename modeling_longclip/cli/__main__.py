"""python -m modeling_longclip.cli: the `longclip` command."""

import sys

from . import main

sys.exit(main())
