# Poetry: pyproject.toml -> poetry.lock (every package, with hashes); the environment lives in .venv.
POETRY ?= poetry
export POETRY_VIRTUALENVS_IN_PROJECT := true
LOCK_FILE := poetry.lock

install: | $(LOCK_FILE) ## create .venv with $(PYTHON) from poetry.lock (written first when missing)
	$(POETRY) env use $(PYTHON)
	$(POETRY) sync --with dev

lock: ## resolve pyproject.toml into poetry.lock (keeps existing pins; `poetry update` to upgrade)
	$(POETRY) lock

lock-check: ## fail if poetry.lock is out of date with pyproject.toml
	$(POETRY) check --lock
