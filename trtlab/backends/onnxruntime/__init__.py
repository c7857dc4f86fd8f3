"""The ONNX Runtime backend: sessions, and the backend every fallback segment runs on."""
