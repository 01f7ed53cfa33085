# Everything a fresh machine (Python 3.11 + pip) needs: `make test`, `make demo`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export AIRFLOW__CORE__LOAD_EXAMPLES = False

.PHONY: install test lint typecheck pytest demo bench e2e clean

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

pytest: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# e2e runs Airflow's real services and headless Chromium (installed with apt: needs root or sudo).
test: lint typecheck pytest e2e

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) -m benchmarks

# Real services (api-server, scheduler, dag-processor, triggerer; LocalExecutor) + headless
# Chromium: see e2e/run.py. Output in e2e-artifacts/, throw-away AIRFLOW_HOME in .e2e-home/.
e2e: install
	$(PY) -m pip install --quiet "playwright>=1.49"
	sh e2e/install-chromium.sh
	$(PY) e2e/run.py $(E2E_ARGS)

clean:
	rm -rf airflow-home .airflow-test .e2e-home e2e-artifacts build *.egg-info .mypy_cache .ruff_cache .pytest_cache landing
