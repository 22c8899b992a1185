# Two commands on a fresh machine: `make demo` and `make test`. Everything else is installed by these targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export POLARS_MAX_THREADS ?= 2

.PHONY: install demo test lint audit bench deploy-check layer clean

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
	$(MAKE) audit

# Dependency audit (pip-audit on the installed environment): fails on a known vulnerability, only warns when
# pip-audit cannot be installed or the advisory service cannot be reached (CI may be offline).
AUDIT_OFFLINE := ConnectionError|Connection refused|Max retries|NameResolution|Temporary failure|timed out|Network is unreachable|SSLError|ProxyError
audit: $(STAMP)
	@$(BIN)/python -m pip_audit --version >/dev/null 2>&1 || $(BIN)/pip install -q pip-audit >/dev/null 2>&1 \
	  || { echo "audit: WARNING pip-audit is not installed and could not be installed; audit skipped"; exit 0; }; \
	out=$$($(BIN)/python -m pip_audit --progress-spinner off --skip-editable 2>&1); rc=$$?; \
	echo "$$out" | grep -v "could not be audited"; \
	skipped=$$(echo "$$out" | grep -c "could not be audited"); \
	if [ $$skipped -gt 0 ]; then echo "audit: WARNING $$skipped packages could not be audited (advisory service unreachable?)"; fi; \
	if [ $$rc -eq 0 ]; then exit 0; fi; \
	if echo "$$out" | grep -q "known vulnerabilit"; then echo "audit: FAILED, see above"; exit 1; fi; \
	if echo "$$out" | grep -qE "$(AUDIT_OFFLINE)"; then \
	  echo "audit: WARNING the advisory service could not be reached; audit skipped"; exit 0; fi; \
	echo "audit: pip-audit failed (exit $$rc)"; exit $$rc

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
