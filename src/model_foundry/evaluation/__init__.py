"""Metrics: validation loss, perplexity, bits per byte, a unigram baseline (and masked-LM metrics)."""
