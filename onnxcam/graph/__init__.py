"""Load, inspect and prepare ONNX graphs: everything that reads a model before it is rewritten."""
