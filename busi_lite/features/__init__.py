"""Preprocessing, the ONNX backbone, cache views and the HDF5 feature cache."""
