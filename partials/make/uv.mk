# uv: pyproject.toml -> uv.lock (every package, every platform, with hashes); .python-version pins Python.
UV ?= uv

install: ## create .venv from uv.lock (exact versions and hashes)
	$(UV) sync --locked || { echo "uv.lock missing or stale: run 'make lock' first"; exit 1; }

lock: ## resolve pyproject.toml into uv.lock (keeps existing pins; `uv lock --upgrade` to upgrade)
	$(UV) lock

lock-check: ## fail if uv.lock is out of date with pyproject.toml
	$(UV) lock --check
