"""Alloy: merge fine-tuned checkpoints without training."""

__version__ = "0.1.0"
