"""SageMaker training entry point, torchrun launcher and the example tabular model.

`training.launcher` turns SageMaker's resource configuration into torchrun arguments (and runs the
same path locally in a folder laid out like ``/opt/ml``); `training.train` is the per-process entry
point; `training.model` holds the PyTorch model and its ONNX export.
"""
