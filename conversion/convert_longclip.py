"""Convert an original Long-CLIP .pt checkpoint: python conversion/convert_longclip.py --checkpoint F --output DIR."""

import sys

from modeling_longclip.converters.cli import convert_longclip_main

if __name__ == "__main__":
    sys.exit(convert_longclip_main())
