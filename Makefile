# Quick start: `make demo` then `make test` (both create .venv from requirements.txt on first use).
PY ?= .venv/bin/python
RUNS ?= results/runs
NAME ?= demo
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test lint demo tables bench sweep-list preflight status clean-runs

install: .venv/.installed
.venv/.installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

demo: install  # DEMO_ARGS=--tune reruns the lr tuning (sweeps/demo_tune.yaml); --fast: a first look
	$(PY) scripts/demo.py $(DEMO_ARGS)

tables: install  # PEFT_RESULTS=results/peft_bench: PEFT's published MetaMathQA rows beside our math runs
	$(PY) scripts/make_tables.py --runs $(RUNS) $(if $(PEFT_RESULTS),--peft-results $(PEFT_RESULTS))

bench: install
	$(PY) benchmarks/bench.py

sweep-list: install
	$(PY) scripts/sweep_list.py $(NAME)

# Every run of a sweep checked offline before it reaches a GPU (config, data source, tokenizer packages,
# parameter counts, peak memory vs GPU_MEM, FLOPs, GPU-hours): make preflight NAME=squad GPU_MEM=24 [GPU=H100]
# [GPUS=8: the wall time with 8 runs at once, e.g. hydra/launcher=ray on an 8-GPU server]
preflight: install
	@test -n "$(GPU_MEM)" || { echo "make preflight needs GPU_MEM=<GiB>, e.g. GPU_MEM=24" >&2; exit 2; }
	$(PY) scripts/preflight.py $(NAME) --gpu-mem $(GPU_MEM) $(if $(GPU),--gpu $(GPU)) $(if $(GPUS),--gpus $(GPUS)) $(ARGS)


# Where every run of a submitted sweep stands (done / running / dead / failed / missing) and the one command
# that relaunches only what needs it: make status NAME=glue_roberta_base [RUNS=dir] [ARGS="seed=42 ..."]
status: install
	$(PY) scripts/status.py $(NAME) $(if $(filter command line environment,$(origin RUNS)),--runs $(RUNS)) $(ARGS)
