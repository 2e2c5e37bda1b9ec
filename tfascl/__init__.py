"""tfascl: Adaptive Soft Contrastive Learning and its baselines for Keras 3."""

__version__ = "0.1.0"
