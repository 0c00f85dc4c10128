"""The engine, along the data flow: graph/ (loading, canonicalisation, sign analysis, paths,
layers) → record/ (onnxruntime recording, derived quantities, shared arrays) → walk/ (plans, the
walker, methods, targets, maps), with compute/ (backends, kernels, constants) under them;
session.py holds one model's state and explainer.py is the public front."""
