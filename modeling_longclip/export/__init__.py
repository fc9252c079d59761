"""Everything that takes a model somewhere else: the folder writer (`folder`: safetensors, processor, payload code,
sentence-transformers files), model cards (`cards`), the Hub upload (`hub`), ONNX graphs (`onnx`) and 248-position
text encoders for diffusers (`text_encoder_stretch`)."""
