"""The TensorRT backend (tensorrt or tensorrt_rtx): op rules, parser ground truth, engines,
profiles, the engine cache, build isolation and the engine-layer (fusion) view."""
