# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    ?= runs/demo
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test lint data install clean bench-fmnist-cpu bench-baselines bench-table1 bench-speed-cpu bench-analysis

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Fashion-MNIST from Debian's package when it is missing and we may install packages.
data:
	@if [ -n "$$BYON_DATA" ] || [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else \
	  echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist', or put the idx files in a folder and set BYON_DATA=that/folder"; exit 1; \
	fi

# The main job: pretrain BYON (its val-tuned reading, configs/byon/default.yaml) on Fashion-MNIST with the default
# small encoder, then kNN + linear probe.
demo: $(STAMP) data
	$(PY) -m byon.cli pretrain --config configs/byon/default.yaml --subset 10000 --epochs 2 \
	  --out $(RUN) --resume auto
	$(PY) -m byon.cli eval knn --run $(RUN)
	$(PY) -m byon.cli eval linear --run $(RUN)
	@echo "run directory: $(RUN)"

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

# The fmnist-cpu protocol of benchmarks.md (hours on 2 cores; finished runs are skipped).
bench-fmnist-cpu: $(STAMP) data
	$(VENV)/bin/byon bench quality --protocol fmnist-cpu --methods byon,mae,random-init,pixels,supervised --seeds $(or $(SEEDS),0,1,2)

# Every baseline at seed 0 under the same protocol (about 1-4 h each on 2 cores).
BASELINES := simmim,diffmae,maskdit,fnmim,byol,ijepa,njepa,ldae,ddae
bench-baselines: $(STAMP) data
	$(VENV)/bin/byon bench quality --protocol fmnist-cpu --methods $(BASELINES) --seeds $(or $(SEEDS),0)

# The analysis figures (attention distance, reconstructions, the JEPAs' context encoder, DDAE's probe grid,
# alignment/uniformity and samples) of the finished fmnist-cpu seed-0 runs -> benchmarks/analysis/fmnist-cpu/.
ANALYSIS_METHODS ?= mae byon simmim diffmae maskdit fnmim byol ijepa njepa ldae ddae supervised
bench-analysis: $(STAMP) data
	BYON=$(VENV)/bin/byon scripts/bench/analysis-fmnist-cpu.sh $(ANALYSIS_METHODS)

# BYON's Table 1 ablation under the same protocol, tabulated.
bench-table1: $(STAMP) data
	$(VENV)/bin/byon bench sweep --protocol fmnist-cpu --configs configs/byon/ablation/*.yaml --seeds 0 \
	  --table benchmarks/table1-fmnist-cpu.md

# The speed protocol of benchmarks.md on this CPU (minutes): training images/s, FLOP utilisation against the
# measured matmul ceiling, eval timings -> benchmarks/results/speed-cpu/<method>.json, then RESULTS.md.
# Run it on an otherwise idle machine. SPEED_METHODS, STEPS, WARMUP, PROFILE (profiled steps after the timed
# ones); THREADS pins torch's threads.
SPEED_METHODS ?= mae,byon
bench-speed-cpu: $(STAMP) data
	$(VENV)/bin/byon bench speed --protocol fmnist-cpu --accelerator cpu --methods $(SPEED_METHODS) \
	  --steps $(or $(STEPS),50) --warmup $(or $(WARMUP),10) --profile-steps $(or $(PROFILE),5) \
	  $(if $(THREADS),--set train.num_threads=$(THREADS))
	$(VENV)/bin/byon bench report

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
