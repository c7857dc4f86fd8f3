"""trtlab.backends.onnxruntime."""
