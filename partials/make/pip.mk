PIP_INDEX_ARGS := {{ '--extra-index-url $(FRAMEWORK_INDEX_URL)' if deps.framework_index else '' }}

install: ## create .venv from the lock (requirements.txt), or from requirements.in before the first lock
	$(PYTHON) -m venv $(VENV)
	if [ -f requirements.txt ]; then \
	  $(BIN)/pip install --require-hashes --no-deps $(PIP_INDEX_ARGS) -r requirements.txt; \
	else \
	  echo "no requirements.txt yet: installing from requirements.in (run 'make lock' to pin everything)"; \
	  $(BIN)/pip install $(PIP_INDEX_ARGS) -r requirements.in; \
	fi
	$(BIN)/pip install --no-deps -e .

lock: ## resolve requirements.in into requirements.txt (exact versions and hashes)
	$(BIN)/pip install -q uv=={{ compat.tools.uv }}
	$(BIN)/uv pip compile requirements.in --generate-hashes --python-version {{ python_version }} \
	  --python-platform x86_64-manylinux_2_28 $(PIP_INDEX_ARGS) --index-strategy unsafe-best-match -o requirements.txt

lock-check: ## fail if requirements.txt is out of date with requirements.in
	$(BIN)/pip install -q uv=={{ compat.tools.uv }}
	$(BIN)/uv pip compile requirements.in --generate-hashes --python-version {{ python_version }} \
	  --python-platform x86_64-manylinux_2_28 $(PIP_INDEX_ARGS) --index-strategy unsafe-best-match -o /tmp/requirements.check.txt --quiet
	diff -I '^#' requirements.txt /tmp/requirements.check.txt
