# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Delta's jars resolved and the Spark driver's class archive written (shared/class_archive.py)
SPARK_STAMP := $(VENV)/.spark-setup

.PHONY: demo test test-full install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m shared.spark_setup
	touch $(SPARK_STAMP)

install: $(SPARK_STAMP)

demo: $(SPARK_STAMP)
	$(BIN)/ctr demo

test: $(SPARK_STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest

# everything make test skips for time: the full kill matrix, process-level races, the cluster's
# MLlib / back-test / driver kill, and the tests marked `full` (an hour or more on 2 cores)
test-full: $(SPARK_STAMP)
	CTR_TEST_FULL=1 CTR_FAULTS_FULL=1 CTR_CONCURRENCY_FULL=1 CTR_CLUSTER_FULL=1 $(BIN)/python -m pytest

clean:
	rm -rf ctr_home .pytest_cache
