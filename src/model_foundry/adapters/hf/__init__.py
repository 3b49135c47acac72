"""Models imported from the Hugging Face Hub: the family table (`families.py`), the adapters that load
and save them (`adapter.py`, `causal.py`, `masked.py`) and the weight checks (`weights.py`)."""
