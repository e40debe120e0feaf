# clisc: every target creates/uses the local virtual environment .venv by itself.
#   make demo              Table 1 + Table 2 on the synthetic dataset, tiny random models (CPU, minutes)
#   make test              the test suite
#   make reproduce-table1  DATA=/path/to/BraTS2020 [PROFILE=paper PROTOCOL=paper WEIGHTS=pretrained DEVICE=cuda]
# Variables: DATA (BraTS-layout folder), PROFILE (paper|demo|tiny), PROTOCOL (paper|official),
# WEIGHTS (pretrained|random), DEVICE (cpu|cuda), TRIALS/WORKERS/STORAGE/STUDY (search, dashboard), PORT (ui).
#   make dashboard         optuna-dashboard on a study (STUDY=name or STORAGE=url), 127.0.0.1:$(DASH_PORT)
#   make ui-screenshots    after make demo: the MLflow UI's five pages from a fresh headless Chromium (docs/img/ui/)
#   make test-integration  real PostgreSQL + MLflow server tests (not part of make test)
#   make table1-cpu        Table 1's weight-free rows on the 12 real sample cases, 4 folds, profile cpu;
#                          report in reports/table1_cpu/
#   make foundations       CLISC + SAM for each SAM-stage model, CLISC for each CLIP (experiments/foundations.yaml)
#   make paper-smoke       every row of Table 1 + Table 2 at the paper profile's sizes, random weights, 3 synthetic
#                          cases, schedules cut short (experiments/paper_smoke/schedule.yaml); DEVICE=cuda on a GPU
#   make cpu-study         the CPU study on the 12 real sample cases (issue 7): fully supervised, raw CAM,
#                          CAM + AMDA, oracle slice labels, 4 folds, profile cpu; report in reports/cpu_study/
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
CLISC    := $(VENV)/bin/clisc
STAMP    := $(VENV)/.installed
OPS      := $(VENV)/.installed-ops

SYNTH    := data/synthetic
# make cpu-study / table1-cpu: the 12 real sample cases unless DATA is given
STUDY_DATA := $(or $(DATA),../shared/data/brats-sample)
DATA     ?= $(SYNTH)
ifeq ($(DATA),$(SYNTH))
# no DATA given: the synthetic dataset with the CPU-sized profile and tiny random models
PROFILE  ?= demo
WEIGHTS  ?= random
DATA_DEP := synth
else
PROFILE  ?= paper
WEIGHTS  ?= pretrained
DATA_DEP :=
endif
PROTOCOL ?= paper
DEVICE   ?= cpu
TRIALS   ?= 12
WORKERS  ?= 1
PORT     ?= 5000
DASH_PORT ?= 8080
STUDY    ?=
STORAGE  ?=
RUN_ARGS  = --data $(DATA) --profile $(PROFILE) --protocol $(PROTOCOL) --weights $(WEIGHTS) --device $(DEVICE)
DEMO_ARGS = --data $(SYNTH) --profile demo --protocol $(PROTOCOL) --weights random

.PHONY: venv test test-integration demo synth reproduce-table1 reproduce-table2 sweep-alpha sweep-beta search report ui ui-screenshots \
        dashboard bench chaos clean-runs cpu-study table1-cpu foundations paper-smoke fanout-bench

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,crf]"
	# SAM 2.1 (optional extra): its sdist builds against the venv's torch; no CUDA extension needed
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation "sam2>=1.1"
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

# the optional tools of .[ops]: optuna-dashboard, the PostgreSQL driver
$(OPS): $(STAMP)
	$(PY) -m pip install -q -e ".[ops]"
	touch $@

# a throwaway PostgreSQL cluster (Debian postgresql binaries) + an MLflow server on it
test-integration: $(OPS)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --run-integration tests/integration

# the synthetic BraTS-format dataset (deterministic; 20 cases = 14 train / 2 valid / 4 test)
synth: $(SYNTH)/.complete
$(SYNTH)/.complete: | $(STAMP)
	$(CLISC) data synth --out $(SYNTH) --cases 20 --seed 0
	$(CLISC) data check $(SYNTH)
	touch $@

demo: $(STAMP) synth
	$(CLISC) experiment table1 table2 $(DEMO_ARGS)
	$(CLISC) report --experiments table1 table2 --out reports

reproduce-table1: $(STAMP) $(DATA_DEP)
	$(CLISC) experiment table1 $(RUN_ARGS)
	$(CLISC) report --experiments table1 --out reports

reproduce-table2: $(STAMP) $(DATA_DEP)
	$(CLISC) experiment table2 $(RUN_ARGS)
	$(CLISC) report --experiments table2 --out reports

sweep-alpha: $(STAMP) $(DATA_DEP)
	$(CLISC) experiment sweep_alpha $(RUN_ARGS)
	$(CLISC) report --experiments sweep_alpha --out reports

sweep-beta: $(STAMP) $(DATA_DEP)
	$(CLISC) experiment sweep_beta $(RUN_ARGS)
	$(CLISC) report --experiments sweep_beta --out reports

search: $(STAMP) $(DATA_DEP)
	$(CLISC) search $(RUN_ARGS) --trials $(TRIALS) --workers $(WORKERS) $(if $(STORAGE),--storage $(STORAGE)) \
		$(if $(STUDY),--study $(STUDY))

dashboard: $(OPS)
	$(CLISC) dashboard --port $(DASH_PORT) $(if $(STUDY),--study $(STUDY)) $(if $(STORAGE),--storage $(STORAGE))

report: $(STAMP)
	$(CLISC) report --out reports

# the CPU study (experiments/cpu_study.yaml: its profile, folds and oracle labels); DATA defaults to the sample;
# its runs (method x fold) go to STUDY_WORKERS one-thread worker processes (--launcher local)
STUDY_WORKERS ?= 2
STUDY_LAUNCH  := --launcher local --workers $(STUDY_WORKERS)
cpu-study: $(STAMP)
	OMP_NUM_THREADS=1 $(CLISC) experiment cpu_study --data $(STUDY_DATA) --weights random --device $(DEVICE) $(STUDY_LAUNCH)
	$(CLISC) report --experiments cpu_study --out reports/cpu_study

# Table 1's rows that need no downloaded weights (experiments/table1_cpu.yaml); DATA defaults to the sample
table1-cpu: $(STAMP)
	OMP_NUM_THREADS=1 $(CLISC) experiment table1_cpu --data $(STUDY_DATA) --weights random --device $(DEVICE) $(STUDY_LAUNCH)
	$(CLISC) report --experiments table1_cpu --out reports/table1_cpu

# CLISC and SAM (5 points + box) for each SAM-stage model, CLISC for each CLIP (experiments/foundations.yaml);
# without DATA: the synthetic dataset with tiny random models (says nothing about the models)
foundations: $(STAMP) $(DATA_DEP)
	$(CLISC) experiment foundations $(RUN_ARGS)
	$(CLISC) report --experiments foundations --out reports
# not part of `make test` (docs/PAPER_SCALE.md: its measured times, 12.1 min on 2 cores; SMOKE_THREADS torch threads; runs/paper_smoke/)
SMOKE_THREADS ?= 2
paper-smoke: $(STAMP)
	OMP_NUM_THREADS=$(SMOKE_THREADS) $(PY) benchmarks/paper_smoke.py --device $(DEVICE) --fresh $(SMOKE_ARGS)

# Table 1 + Table 2 at the tiny profile, --launcher inline vs local with 2 workers
fanout-bench: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/fanout_bench.py --workers 2

ui: $(STAMP)
	$(CLISC) ui --port $(PORT)

# the five UI pages a new user sees (fresh headless Chromium profile) as PNGs in docs/img/ui/
ui-screenshots: $(STAMP)
	$(PY) scripts/ui_screenshots.py --out docs/img/ui

bench: $(STAMP)
	$(PY) benchmarks/metrics_bench.py
	$(PY) benchmarks/sam_stage_bench.py
	$(PY) benchmarks/foundation_baselines_bench.py
	$(PY) benchmarks/paper_scale.py --device $(DEVICE)
	OMP_NUM_THREADS=1 $(PY) benchmarks/scale_bench.py

# kill -9 the tiny pipeline in every stage, resume, compare; two experiments at once on one cache
chaos: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/chaos.py

clean-runs:
	rm -rf runs cache mlflow.db optuna
