"""Annotation adapters: one module per format, registered by name."""
