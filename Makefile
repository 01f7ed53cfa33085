# Everything a fresh machine (Python 3.11 + pip) needs: `make test`, `make demo`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export AIRFLOW__CORE__LOAD_EXAMPLES = False

.PHONY: install system-packages test lint typecheck pytest demo bench bench-moonshot e2e clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# The Debian packages the tests start servers from (postgresql, redis-server; chromium for the
# e2e), installed with apt when missing (root or sudo): a fresh machine has only Python and apt.
system-packages:
	sh e2e/install-apt.sh

pytest: install system-packages
	$(PY) -m pytest -q $(PYTEST_ARGS)

# e2e runs Airflow's real services and headless Chromium (installed with apt: needs root or sudo).
test: lint typecheck pytest e2e

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) -m benchmarks

# Production shape (see e2e/run.py): api-server, scheduler, dag-processor, triggerer and two Celery
# workers on Redis, PostgreSQL (metadata DB + warehouse), S3 landing on moto's server, headless
# Chromium. The Debian packages (chromium, postgresql, redis-server) are installed with apt when
# missing: needs root or sudo. Output in e2e-artifacts/, throw-away AIRFLOW_HOME in .e2e-home/.
E2E_STAMP := $(VENV)/.e2e-stamp

$(E2E_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev,e2e]"
	touch $(E2E_STAMP)

e2e: $(E2E_STAMP) system-packages
	$(PY) e2e/run.py $(E2E_ARGS)

clean:
	rm -rf airflow-home .airflow-test .e2e-home e2e-artifacts build *.egg-info .mypy_cache .ruff_cache .pytest_cache landing

# Issue 14's moonshot alone (also part of `make bench`): the sharded DAG under scheduler +
# LocalExecutor + PostgreSQL at 1,000 and 3,000 consents, and the 0.x per-consent DAG at 100; its
# section of benchmarks/RESULTS.md is replaced, the rest kept. About 20 minutes on 2 cores.
bench-moonshot: install
	$(PY) -m benchmarks --only moonshot $(BENCH_ARGS)
