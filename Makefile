# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv (Python 3.11)
# when missing and install the project editable with every extra, pinned by constraints.txt.
# The install reruns only when pyproject.toml or constraints.txt changes.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Delta's jars are resolved by Spark itself (spark.jars.packages, cached under ~/.ivy2*) on the first
# start. `make jars` fetches them with Maven into .jars/ for a cluster that cannot reach Maven Central
# (then export ECOVAL_DELTA_JARS=$(CURDIR)/.jars), with Hadoop's s3a connector and the AWS SDK bundle
# it needs for tables in S3.
DELTA_JARS_VERSION := 4.4.0
JARS := .jars

.PHONY: install jars browser test test-spark test-all test-fast stack-test docker-test demo lint typecheck bench bench-quick bench-report bench-batched bench-quality bench-scale bench-load bench-stack clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,celery]"
	touch $(STAMP)

jars:
	@command -v mvn >/dev/null 2>&1 || { echo "mvn not found: install Maven to fetch Delta's jars"; exit 1; }
	rm -rf $(JARS) && mkdir -p $(JARS)
	mvn -B -q dependency:copy -Dartifact=io.delta:delta-spark_4.2_2.13:$(DELTA_JARS_VERSION) -DoutputDirectory=$(JARS)
	mvn -B -q dependency:copy -Dartifact=io.delta:delta-storage:$(DELTA_JARS_VERSION) -DoutputDirectory=$(JARS)
	mvn -B -q dependency:copy -Dartifact=org.apache.hadoop:hadoop-aws:3.5.0 -DoutputDirectory=$(JARS)
	mvn -B -q dependency:copy -Dartifact=software.amazon.awssdk:bundle:2.35.4 -DoutputDirectory=$(JARS)
	mvn -B -q dependency:copy -Dartifact=software.amazon.s3.analyticsaccelerator:analyticsaccelerator-s3:1.3.1 -DoutputDirectory=$(JARS)
	@echo "export ECOVAL_DELTA_JARS=$(CURDIR)/$(JARS) to use them"

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check ecoval_ops spark_jobs dags tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# The real-browser test (tests/test_browser.py) needs Debian's Chromium: installed here when apt-get can
# (root, Debian); elsewhere the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	       && echo "installed chromium for the browser test"; } \
	  || echo "chromium not installed (needs root and apt-get): tests/test_browser.py will skip"

# The suite in three parts; `make test-all` (what CI runs) runs the three in turn. `make test` is
# every test that needs no JVM and no service (the delta-rs engine end to end, the CLI, the DAG
# under dag.test, tables in s3proxy), its test files spread over the cores (pytest-xdist);
# `make test-spark` every test that starts Spark (marker spark: a local session, a standalone
# cluster, Spark Connect); `make stack-test` (below) the natively started services.
test: lint typecheck browser
	$(BIN)/python -m pytest -m "not spark and not stack and not docker" -n auto --dist loadfile

test-spark: $(STAMP)
	$(BIN)/python -m pytest -m "spark and not stack and not docker"

test-all: test test-spark stack-test

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow"

# The tests against the natively started services (Postgres, Redis, Spark standalone, MLflow server,
# Airflow scheduler); the fixture installs postgresql and redis-server with apt-get where it is root.
stack-test: $(STAMP) browser
	$(BIN)/python -m pytest -m stack

# The project image built and the compose stack run end to end (tests/docker): installs docker.io,
# docker-compose and debootstrap where root and missing, starts dockerd when none runs, builds a bookworm
# base with debootstrap and stand-ins for the postgres and redis images when no registry answers, runs
# ecoval_nightly through the API server, then tears it all down. About 15 minutes from nothing.
docker-test: $(STAMP)
	$(BIN)/python -m pytest -m docker -s tests/docker

demo: $(STAMP)
	$(BIN)/ecoval demo

# Benchmarks (benchmarks.md). `make bench` reruns every protocol with 5 seeds (about an hour on 2 cores)
# and regenerates BENCHMARKS.md and the plots; `make bench-quick` runs small versions of each (1 seed)
# into benchmarks/results-quick/ and leaves the committed results alone.
BENCH := cd benchmarks && ../$(BIN)/python
QUICK := results-quick

bench: $(STAMP)
	$(MAKE) bench-quality
	$(BENCH) tuning.py
	$(BENCH) cost.py
	$(BENCH) oos.py
	$(BENCH) quarantine.py
	$(BENCH) exactness.py
	$(BENCH) batched_training.py
	$(BENCH) scale.py
	$(BENCH) concurrency.py
	$(BENCH) object_store.py
	$(MAKE) bench-report

bench-report: $(STAMP)
	$(BENCH) report.py

bench-quick: $(STAMP)
	$(BENCH) quality.py --protocols P1 D1 --seeds 0 --out $(QUICK)
	$(BENCH) tuning.py --protocols P1 --seeds 0 --out $(QUICK)
	$(BENCH) cost.py --seeds 0 --budgets 1000 --out $(QUICK)
	$(BENCH) oos.py --protocols P1 --seeds 0 --out $(QUICK)
	$(BENCH) quarantine.py --protocols D1 P1 --seeds 0 --out $(QUICK)
	$(BENCH) exactness.py --seeds 0 --clusters 4 --out $(QUICK)
	$(BENCH) batched_training.py --repeats 1 --out $(QUICK)/batched_lco.json
	$(BENCH) scale.py --incore 10000 --spark 10000 --out $(QUICK)/scale.json
	$(BENCH) concurrency.py --cases P1:logistic --out $(QUICK)
	$(BENCH) report.py --results $(QUICK) --plots $(QUICK)/plots --out $(QUICK)/BENCHMARKS.md

bench-batched: $(STAMP)
	$(BENCH) batched_training.py

bench-quality: $(STAMP)
	$(BENCH) quality.py
	$(BENCH) quality.py --protocols P1 P3 X1 --methods ecoval_trees --merge

bench-scale: $(STAMP)
	$(BENCH) scale.py

bench-load: $(STAMP)
	$(BENCH) load.py

bench-stack: $(STAMP)
	$(BENCH) stack.py

clean:
	rm -rf $(VENV) $(JARS) .pytest_cache .mypy_cache .ruff_cache
