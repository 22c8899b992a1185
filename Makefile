# Two commands on a fresh machine: `make demo` and `make test`. Everything else is installed by these targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export POLARS_MAX_THREADS ?= 2

.PHONY: install demo test lint bench deploy-check layer clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/measures demo

test: $(STAMP)
	$(BIN)/pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# AWS: cfn-lint on the raw and the SAM-expanded template (tools in their own venv under .tools/)
deploy-check:
	scripts/deploy_check.sh

# AWS: the stripped, precompiled polars layer and the code package (needs PyPI; see docs/deploy.md)
layer:
	scripts/build_layer.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
