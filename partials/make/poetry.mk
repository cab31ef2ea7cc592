POETRY ?= poetry

install: ## create .venv from poetry.lock
	POETRY_VIRTUALENVS_IN_PROJECT=true $(POETRY) install --with dev

lock: ## resolve pyproject.toml into poetry.lock
	$(POETRY) lock

lock-check: ## fail if poetry.lock is out of date with pyproject.toml
	$(POETRY) check --lock
