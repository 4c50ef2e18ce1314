# Two commands on a fresh machine: `make run` (the whole job on the embedded default data)
# and `make test`. Both create .venv from uv.lock first if it is missing or stale.
PYTHON ?= python3
VENV := .venv
UV := $(PYTHON) -m uv
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export UV_PYTHON := $(shell command -v $(PYTHON))

.PHONY: run test bench venv clean

$(VENV)/.synced: uv.lock pyproject.toml
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

venv: $(VENV)/.synced

run: $(VENV)/.synced
	$(VENV)/bin/recs run

test: $(VENV)/.synced
	$(VENV)/bin/python -m pytest

bench: $(VENV)/.synced
	$(VENV)/bin/python bench/pipeline.py

clean:
	rm -rf warehouse/recs.duckdb* warehouse/sequences warehouse/.current warehouse/.snapshots warehouse/.sequences \
		warehouse/.writer.lock checkpoints/*/ data/
