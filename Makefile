# Two entry points on a fresh machine:  `make quickstart` (the default sweep end to end) and `make test`.
# After each change: `make test-fast` (the tests not marked slow: no training runs, launches, Slurm or full reports).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install system-deps quickstart lint test test-fast bench coord-checks clean-results

$(STAMP): pyproject.toml setup.py $(wildcard scaling/structures/fastpath/csrc/*.c scaling/structures/fastpath/csrc/*.h)
	$(PY) -m venv $(VENV)
	# CPU torch first, so nothing pulls a multi-GB CUDA build; triton (.[gpu], no dependencies of its own) for
	# the Triton kernels' interpreter tests.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,gpu]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests need: a real local Slurm cluster and the Fashion-MNIST files.
system-deps:
	bash slurm/install.sh
	dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist; }

quickstart: install
	$(BIN)/python -m scaling.launch +sweep=quickstart
	$(BIN)/python -m analysis report --results results --sweep quickstart --out results/report

lint: install
	$(BIN)/ruff check .

# CI's command (.ci/run): the linter, then every test, slow ones included, with the 25 slowest listed: all but the
# Slurm tests on two pytest-xdist workers, then those on the one local Slurm cluster in one process (tests/conftest.py).
test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=25 -n 2 -m "not slurm"
	$(BIN)/python -m pytest -q --durations=5 -m slurm

# Two pytest workers (pytest-xdist): the fast tests are mostly Python and subprocess start-up, 1.7x faster on 2 cores.
test-fast: install system-deps
	$(BIN)/python -m pytest -q -m "not slow" -n 2

bench: install
	$(BIN)/python bench/layers.py

# Coordinate checks of every structure, structure-aware vs naive (conf/coord_checks.yaml -> docs/results/coord_checks/).
coord-checks: install
	OMP_NUM_THREADS=1 $(BIN)/python -m scaling.coordsuite
