"""Convert a ProCLIP .pt: python conversion/convert_proclip.py --checkpoint proclip/3m/L14.pt --llm L --output DIR."""

import sys

from modeling_longclip.converters.cli import convert_proclip_main

if __name__ == "__main__":
    sys.exit(convert_proclip_main())
