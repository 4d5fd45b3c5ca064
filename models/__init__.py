"""Model training, ONNX export and model cards; the shipped artifacts live in subfolders."""
