"""Convert every released checkpoint that is present (or downloadable), one verified folder each, with a report:
python conversion/convert_zoo.py --downloads DIR --output DIR [--only NAME ...] [--offline] [--allow-any-shape]."""

import sys

from modeling_longclip.converters.zoo import main

if __name__ == "__main__":
    sys.exit(main())
