"""MedTL-Caffe: Caffe-faithful reproductions of medical-imaging transfer-learning studies."""

__version__ = "0.1.0"
