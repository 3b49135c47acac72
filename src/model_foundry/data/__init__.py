"""Corpus import and split, tokenizer training, token-id arrays and batch collators."""
