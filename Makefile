# The two set-up commands: `make demo` and `make test`. Both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Real data lives beside the checkout in ../shared/data (never copied into the repo).
SHARED_DATA := $(abspath ../shared/data)
export COMPRESSLAB_DATA ?= $(if $(wildcard $(SHARED_DATA)/glue),$(SHARED_DATA),)
PIPELINE ?= obert_int8
DEMO_ARGS ?=
# The package asks for a torch range (users keep theirs); our venvs pin the exact CPU build,
# which pip finds on local disk through its configured find-links.
CONSTRAINTS := constraints.txt

.PHONY: demo test test-e2e venv install install-test deepsparse clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

$(VENV)/.installed-demo: $(VENV)/.created pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[demo]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[test,demo]'
	touch $@

venv: $(VENV)/.created
install: $(VENV)/.installed-demo
install-test: $(VENV)/.installed-test

# Fine-tune a quick teacher on SST-2, compress, export, score, benchmark, report.
demo: $(VENV)/.installed-demo
	$(PY) -m compresslab +pipeline=$(PIPELINE) $(DEMO_ARGS)

# Unit and integration tests (<= 15 min on 2 cores); the end-to-end runs are `make test-e2e`.
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not e2e" --wait-for-training=600

# Every shipped pipeline end to end with every stage on, and the built wheel run from outside the repo.
test-e2e: $(VENV)/.installed-test
	$(PY) -m pytest -q -m e2e

# Optional: DeepSparse 1.8.0 (oBERT's CPU engine) in its own venv; its numpy/onnx pins differ from ours.
# Then: python -m compresslab ... bench.deepsparse.enabled=auto
DS_VENV := .venv-deepsparse
$(DS_VENV)/.installed:
	$(PYTHON) -m venv $(DS_VENV)
	$(DS_VENV)/bin/pip install -q 'deepsparse==1.8.0'
	touch $@

deepsparse: $(DS_VENV)/.installed

clean:
	rm -rf outputs .cache
