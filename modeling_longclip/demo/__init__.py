"""The embedded default jobs, offline and without downloaded weights: `python -m modeling_longclip.demo` (what 248
tokens buy, on synthetic scenes: long_text_demo.py) and `python -m modeling_longclip.demo.conversion` (a conversion
round trip)."""
