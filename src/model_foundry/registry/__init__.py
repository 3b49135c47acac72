"""The model registry, derived, never hand-kept: what `dvc.lock`, DVC experiments, `*.dvc` files, the model
folders' metadata and MLflow runs say about every model.

`dvc.py` reads `dvc.lock` and computes DVC's content hash without importing DVC. Issue 11 fills in the rest
(MLflow runs, frozen records with warnings, lineage, checks, deletion as a plan).
"""
