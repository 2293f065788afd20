# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv (Python 3.11)
# when missing and install the project editable with every extra, pinned by constraints.txt.
# The install reruns only when pyproject.toml or constraints.txt changes.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Delta's jars, fetched with Maven: Spark's own resolver cannot reach Maven Central here, and
# Central serves delta-spark_4.2_2.13 up to 4.4.0 (the pip package 4.4.1 would ask for 4.4.1).
DELTA_JARS_VERSION := 4.4.0
JARS := .jars
JARS_STAMP := $(JARS)/.delta-$(DELTA_JARS_VERSION)
export ECOVAL_DELTA_JARS := $(CURDIR)/$(JARS)

.PHONY: install test test-fast demo lint typecheck bench-batched bench-quality bench-scale bench-load clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

$(JARS_STAMP):
	@command -v mvn >/dev/null 2>&1 || { echo "mvn not found: install Maven to fetch Delta's jars"; exit 1; }
	rm -rf $(JARS) && mkdir -p $(JARS)
	mvn -B -q dependency:copy -Dartifact=io.delta:delta-spark_4.2_2.13:$(DELTA_JARS_VERSION) -DoutputDirectory=$(JARS)
	mvn -B -q dependency:copy -Dartifact=io.delta:delta-storage:$(DELTA_JARS_VERSION) -DoutputDirectory=$(JARS)
	touch $@

install: $(STAMP) $(JARS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check ecoval_ops spark_jobs dags tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck $(JARS_STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP) $(JARS_STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow"

demo: $(STAMP) $(JARS_STAMP)
	$(BIN)/ecoval demo

bench-batched: $(STAMP)
	$(BIN)/python benchmarks/batched_training.py

bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py --protocols P1 P3 M1 D1 --seeds 0 1 2

bench-scale: $(STAMP) $(JARS_STAMP)
	$(BIN)/python benchmarks/scale.py

bench-load: $(STAMP) $(JARS_STAMP)
	$(BIN)/python benchmarks/load.py

clean:
	rm -rf $(VENV) $(JARS) .pytest_cache .mypy_cache .ruff_cache
