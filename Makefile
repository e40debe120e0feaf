# clisc: every target creates/uses the local virtual environment .venv by itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

DATA     ?= data/synthetic
PROFILE  ?= demo
PROTOCOL ?= paper
WEIGHTS  ?= random

.PHONY: venv test demo clean-demo

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

data/synthetic/.done: $(STAMP)
	$(VENV)/bin/clisc data synth --out data/synthetic --cases 20 --seed 0
	touch $@

demo: $(STAMP) data/synthetic/.done
	$(VENV)/bin/clisc data check data/synthetic
	$(VENV)/bin/clisc data split data/synthetic --seed 0
