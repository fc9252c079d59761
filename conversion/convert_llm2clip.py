"""Merge LLM2CLIP's two repos into one folder: python conversion/convert_llm2clip.py --clip C --llm L --output DIR."""

import sys

from modeling_longclip.converters.cli import convert_llm2clip_main

if __name__ == "__main__":
    sys.exit(convert_llm2clip_main())
