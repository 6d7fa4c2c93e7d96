# Two commands from a fresh clone: `make demo` and `make test`. Both set up .venv first, once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision first, pinned to the releases the machine images carry on disk
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default, offline: a small sweep of the trick menu on digits
# (2 workers, successive-halving pruning), then a leave-one-out ablation of the menu's tricks over 3 paired
# seeds and its report in reports/. Rerunning resumes both studies, so a second `make demo` is quick.
demo: $(STAMP)
	$(BIN)/ablate sweep tricks_digits n_trials=24 workers=2
	$(BIN)/ablate sweep ablation_digits seeds=3 workers=2
	$(BIN)/ablate report ablation_digits --out reports
	@echo "Report: reports/ablation_digits/report.html (and report.md); runs: $(BIN)/ablate ui"

# Lint (ruff, rules in pyproject.toml) and type-check (mypy --strict on ablate/) first: CI runs this target.
test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fit.py

clean:
	rm -rf $(VENV) mlflow.db mlartifacts runs outputs
