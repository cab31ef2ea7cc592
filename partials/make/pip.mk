# pip: requirements.in (direct pins) -> requirements.txt (every package, exact version and hashes),
# resolved by uv for Linux x86-64 / Python {{ python_version }} (the Docker image's platform).
PIP_INDEX_ARGS := {{ '--extra-index-url $(FRAMEWORK_INDEX_URL)' if deps.framework_index else '' }}
LOCK_ARGS := --generate-hashes --python-version {{ python_version }} --python-platform x86_64-manylinux_2_28 \
  --index-strategy unsafe-best-match $(PIP_INDEX_ARGS)

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv=={{ compat.tools.uv }}

# Before the first lock, the framework comes from its own index alone (its dependencies then from PyPI):
# asking that index for every package costs minutes where it is slow or only reachable through a mirror.
install: ## create .venv from the lock (requirements.txt), or from requirements.in before the first lock
	$(PYTHON) -m venv $(VENV)
	if [ -f requirements.txt ]; then \
	  $(BIN)/pip install --require-hashes --no-deps $(PIP_INDEX_ARGS) -r requirements.txt; \
	else \
	  echo "no requirements.txt yet: installing from requirements.in (run 'make lock' to pin everything)"; \
{% if deps.framework_index %}
	  $(BIN)/pip install --no-deps --index-url $(FRAMEWORK_INDEX_URL) '{{ deps.framework_requirement }}'; \
	  $(BIN)/pip install -r requirements.in; \
{% else %}
	  $(BIN)/pip install -r requirements.in; \
{% endif %}
	fi
	$(BIN)/pip install --no-deps -e .

lock: $(BIN)/uv ## resolve requirements.in into requirements.txt (keeps existing pins; delete it to upgrade)
	$(BIN)/uv pip compile requirements.in $(LOCK_ARGS) -o requirements.txt

lock-check: $(BIN)/uv ## fail if requirements.txt is out of date with requirements.in
	cp requirements.txt $(VENV)/requirements.check.txt
	$(BIN)/uv pip compile requirements.in $(LOCK_ARGS) --quiet -o $(VENV)/requirements.check.txt
	diff -I '^ *#' requirements.txt $(VENV)/requirements.check.txt || { echo "requirements.txt is stale: run 'make lock'"; exit 1; }
