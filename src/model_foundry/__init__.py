"""Model Foundry: a DVC-versioned, reproducible repository for language models."""

__version__ = "0.1.0"
