CONDA ?= micromamba

install: ## create the environment in .venv from conda-lock.yml (or environment.yml before the first lock)
	if [ -f conda-lock.yml ]; then \
	  conda-lock install --micromamba -p $(VENV) conda-lock.yml; \
	else \
	  $(CONDA) create -y -p $(VENV) -f environment.yml; \
	fi
	$(BIN)/pip install --no-deps -e .

lock: ## resolve environment.yml into conda-lock.yml (linux-64)
	conda-lock lock -f environment.yml -p linux-64

lock-check: ## fail if conda-lock.yml is out of date with environment.yml
	conda-lock lock -f environment.yml -p linux-64 --check-input-hash
