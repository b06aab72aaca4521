# Two user-facing targets: `make test` and `make benchmark`. Both bootstrap .venv from pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test benchmark

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11+ or run 'make PYTHON=python3.X ...'" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { echo "error: $(PYTHON) is older than 3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV) (is the venv module installed?)" >&2; exit 1; }
	@$(PY) -m pip install --quiet --upgrade pip || { echo "error: pip upgrade failed (package index reachable?)" >&2; exit 1; }
	@$(PY) -m pip install --quiet -e '.[dev,tracking,hpo]' || { echo "error: installing learned-opt and its dependencies failed; see pip's message above" >&2; exit 1; }
	@touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadfile -q

benchmark: $(STAMP)
	$(PY) -m experiments.benchmark --config experiments/configs/benchmark_quick.py --workdir workdirs/benchmark
