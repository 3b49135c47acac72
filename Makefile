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

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,serve]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/dvc repro
	@echo ""
	@echo "Metrics (metrics.json):"
	@cat metrics.json
	@echo ""
	@echo "Trained model:   models/$$($(BIN)/python -c 'import yaml;print(yaml.safe_load(open("params.yaml"))["model_name"])')-trained/"
	@echo "Loss curve:      $(BIN)/dvc plots show   (plots/train_loss.csv)"
	@echo "Compare runs:    $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: $(VENV)/.installed lint typecheck
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal $(PYTEST_ARGS)

# The suite with line coverage of src/ (about 40 % slower than `make test` for in-process tests).
coverage: $(VENV)/.installed
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal --cov=model_foundry --cov-report=term:skip-covered $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# mypy on src/ (settings and timings in pyproject.toml [tool.mypy]; its cache is .mypy_cache/).
typecheck: $(VENV)/.installed
	$(BIN)/mypy src

format: $(VENV)/.installed
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_trainer.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .coverage
