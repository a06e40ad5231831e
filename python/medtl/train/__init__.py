"""Training runs on pycaffe: the epoch loop, validation, snapshot selection, resume."""
