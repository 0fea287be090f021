"""busi-lite: breast-ultrasound triage on a laptop CPU.

Data flow: data (discover, validate, group, split) -> backbone (ONNX MobileNetV2)
-> features (HDF5 cache) -> head (NumPy MLP / multi-task, Adam) -> experiments
-> predict (labels, lesion map, safety flags) -> report.
"""

__version__ = "0.1.0"

CLASSES = ("normal", "benign", "malignant")


def predict(*args, **kwargs):
    """Classify images; see :func:`busi_lite.inference.predict_images`."""
    from .inference import predict_images

    return predict_images(*args, **kwargs)
