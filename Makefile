# The two commands of the README: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU wheel this machine has on disk; see README for a CUDA install.
TORCH  ?= torch==2.13.0

# dvc.yaml's stage commands call `foundry`: the venv's bin must be on PATH for them.
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PYTHONUNBUFFERED := 1

.PHONY: run test coverage lint typecheck format bench clean

# Installation takes minutes: each step is announced before it starts (pip itself runs with -q).
PIP := $(BIN)/pip install --disable-pip-version-check

$(BIN)/python:
	@echo "==> [1/3] creating the virtual environment $(VENV)/ ($(PYTHON) -m venv)"
	@$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> [2/3] installing $(TORCH) (CPU; a large download the first time)"
	@$(PIP) -q "$(TORCH)"
	@echo "==> [3/3] installing the project and its dependencies (takes a few minutes)"
	@$(PIP) -q -e ".[dev,serve]"
	@touch $@
	@echo "==> installed: $(VENV)/ (activate with: source $(BIN)/activate)"

run: $(VENV)/.installed
	@echo "==> running the pipeline: dvc repro (inputs → import → convert → tokenize → train → evaluate)"
	$(BIN)/dvc repro
	@echo ""
	@echo "Metrics (metrics.json):"
	@$(BIN)/python -m model_foundry.evaluation.table metrics.json
	@echo ""
	@echo "Trained model:   models/$$($(BIN)/python -c 'import yaml;print(yaml.safe_load(open("params.yaml"))["model_name"])')-trained/"
	@echo "Loss curves:     $(BIN)/dvc plots show   (writes dvc_plots/index.html; works offline)"
	@echo "Compare runs:    $(BIN)/dvc exp show --only-changed --drop 'Created|data/|models|src/|val_loss'"
	@echo "MLflow UI:       MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --workers 1"

test: $(VENV)/.installed lint typecheck
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal $(PYTEST_ARGS)

# The suite with line coverage of src/ (about 40 % slower than `make test` for in-process tests).
coverage: $(VENV)/.installed
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal --cov=model_foundry --cov-report=term:skip-covered $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

# mypy on src/ (settings and timings in pyproject.toml [tool.mypy]; its cache is .mypy_cache/).
typecheck: $(VENV)/.installed
	$(BIN)/mypy src

format: $(VENV)/.installed
	$(BIN)/ruff format src tests benchmarks tools
	$(BIN)/ruff check --fix src tests benchmarks tools

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_trainer.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .coverage
