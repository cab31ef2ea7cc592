# conda: environment.yml (conda-forge) -> conda-lock.yml (linux-64, exact builds and hashes).
CONDA_LOCK ?= conda-lock
LOCK_FILE := conda-lock.yml
LOCK_ARGS := -f environment.yml -p linux-64
{% if cuda != 'cpu' %}
# The solve assumes a CUDA {{ cuda }} driver (virtual package __cuda): with conda-lock's default, CUDA 11.4, no
# CUDA {{ cuda.split('.')[0] }} build is installable. The lock-check passes it too: the input hash covers it.
LOCK_ARGS += --with-cuda {{ cuda }}
{% endif %}

install: | $(LOCK_FILE) ## create the environment in .venv from conda-lock.yml (written first when missing)
	$(CONDA_LOCK) install --micromamba -p $(VENV) conda-lock.yml
	$(BIN)/pip install --no-deps -e .

lock: ## resolve environment.yml into conda-lock.yml (linux-64)
	$(CONDA_LOCK) lock $(LOCK_ARGS)

lock-check: ## fail if conda-lock.yml was not made from the current environment.yml
	mkdir -p $(VENV) && cp conda-lock.yml $(VENV)/conda-lock.check.yml
	$(CONDA_LOCK) lock $(LOCK_ARGS) --check-input-hash --lockfile $(VENV)/conda-lock.check.yml
	diff -q conda-lock.yml $(VENV)/conda-lock.check.yml || { echo "conda-lock.yml is stale: run 'make lock'"; exit 1; }
