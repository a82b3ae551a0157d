# Quick start: `make demo` then `make test` (both create .venv from requirements.txt on first use).
PY ?= .venv/bin/python
RUNS ?= results/runs
NAME ?= demo
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install torch-cuda test lint demo tables bench sweep-list preflight status prefetch gpu-check clean-runs

# The CUDA build of torch: left empty, the package index's build (CUDA 13.0: NVIDIA driver >= 580).
# make install TORCH_CUDA=cu128 (or cu126): the same torch/torchvision pins from PyTorch's per-CUDA wheel
# index (driver >= 525.60.13, e.g. r535/r550/r570), then the rest of requirements.txt constrained to that
# build; an existing .venv is switched in place. Minimum drivers: tasks/training/device.py (DRIVER_MINIMUM).
TORCH_CUDA ?=
TORCH_INDEX ?= https://download.pytorch.org/whl
TORCH_PINS = $(shell grep -E '^(torch|torchvision)==' requirements.txt)

install: .venv/.installed
	@if [ -n "$(TORCH_CUDA)" ] && [ "$$(cat .venv/.torch-cuda 2>/dev/null)" != "$(TORCH_CUDA)" ]; then \
		$(MAKE) --no-print-directory torch-cuda; fi

.venv/.installed: requirements.txt
	python3 -m venv .venv
	$(if $(TORCH_CUDA),$(MAKE) --no-print-directory torch-cuda,.venv/bin/pip install -q -r requirements.txt)
	touch $@

# (used by install) torch + torchvision as <pin>+<TORCH_CUDA> from the per-CUDA index, then everything
# else with a constraints file holding that exact build, so no other package can move torch
torch-cuda:
	.venv/bin/pip install -q --index-url $(TORCH_INDEX)/$(TORCH_CUDA) $(addsuffix +$(TORCH_CUDA),$(TORCH_PINS))
	.venv/bin/python -c "import torch, torchvision; print(f'torch=={torch.__version__}\ntorchvision=={torchvision.__version__}')" > .venv/torch-constraints.txt
	.venv/bin/pip install -q -r requirements.txt -c .venv/torch-constraints.txt
	.venv/bin/python -c "import torch; print('installed torch', torch.__version__, 'CUDA', torch.version.cuda)"
	echo $(TORCH_CUDA) > .venv/.torch-cuda

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
	$(PY) scripts/sweep_list.py $(NAME) $(ARGS)

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

# Every distinct model and dataset a sweep needs (NAME=paper: all paper sweeps), downloaded once into the HF
# cache where the hub is reachable (the login node), then loaded with the hub off; records each official
# split's digest in results/prefetch/digests.json. Jobs then run with HF_HUB_OFFLINE=1.
prefetch: install
	HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 $(PY) scripts/prefetch.py $(NAME) $(ARGS)

# The checks that need a GPU, in one process (one GPU, no network, a few minutes): step memory against the
# preflight's estimate, step-time ratios, merged inference, a 1-GPU NCCL group, masks GPU = CPU. Exit 1:
# out of bounds; 2: no CUDA here. `$(PY) scripts/gpu_check.py --cpu-smoke` runs the same code on CPU.
gpu-check: install
	$(PY) scripts/gpu_check.py
