"""Tests of model_foundry.generation (a package, so its conftest does not shadow tests/conftest.py)."""
