# pip: pyproject.toml (direct pins: [project] dependencies and the dev group) -> requirements.txt (every
# package, exact version and hashes), resolved by uv for Linux x86-64 / Python {{ python_version }} (the Docker image's platform).
LOCK_FILE := requirements.txt
{% if deps.framework_index %}
# Company mirror? Override at install/lock time: make install FRAMEWORK_INDEX_URL=https://mirror/...
FRAMEWORK_INDEX_URL ?= {{ deps.framework_index }}
PIP_INDEX_ARGS := --extra-index-url $(FRAMEWORK_INDEX_URL)
{% endif %}
LOCK_ARGS := --group dev --generate-hashes --python-version {{ python_version }} --python-platform x86_64-manylinux_2_28 \
  --index-strategy unsafe-best-match $(PIP_INDEX_ARGS)

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv=={{ compat.tools.uv }}

install: | $(LOCK_FILE) ## create .venv from the lock (requirements.txt; written first when missing)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --require-hashes --no-deps $(PIP_INDEX_ARGS) -r requirements.txt
	$(BIN)/pip install --no-deps -e .

lock: $(BIN)/uv ## resolve pyproject.toml into requirements.txt (keeps existing pins; delete it to upgrade)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_ARGS) -o requirements.txt

lock-check: $(BIN)/uv ## fail if requirements.txt is out of date with pyproject.toml
	cp requirements.txt $(VENV)/requirements.check.txt
	$(BIN)/uv pip compile pyproject.toml $(LOCK_ARGS) --quiet -o $(VENV)/requirements.check.txt
	diff -I '^ *#' requirements.txt $(VENV)/requirements.check.txt || { echo "requirements.txt is stale: run 'make lock'"; exit 1; }
