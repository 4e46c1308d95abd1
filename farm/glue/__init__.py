"""GLUE tasks: their files, labels and metrics."""
