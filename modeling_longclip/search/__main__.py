"""`python -m modeling_longclip.search COMMAND ...`: what `accelerate launch -m modeling_longclip.search index ...`
starts in every process."""

import sys

from .cli import main

sys.exit(main())
