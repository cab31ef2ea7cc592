# uv: pyproject.toml -> uv.lock (every package, every platform, with hashes); .python-version pins Python.
UV ?= uv
LOCK_FILE := uv.lock

install: | $(LOCK_FILE) ## create .venv from uv.lock (exact versions and hashes; written first when missing)
	$(UV) sync --locked || { echo "uv.lock is stale (pyproject.toml changed): run 'make lock'"; exit 1; }

lock: ## resolve pyproject.toml into uv.lock (keeps existing pins; `uv lock --upgrade` to upgrade)
	$(UV) lock

lock-check: ## fail if uv.lock is out of date with pyproject.toml
	$(UV) lock --check
