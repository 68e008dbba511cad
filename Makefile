# kfac-bench. Every target here works on a fresh machine: `install` creates .venv and everything
# else depends on it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pair that imports together (a CUDA build; it also runs on CPU).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= authors
ARGS ?=
# OpenMP busy-waiting makes 2 threads slower than 1 on a busy 2-core machine; passive waiting costs nothing.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install run test test-cluster fisher bench report reproduce-paper verdict clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

run: install            ## the main job (about 3 min on 2 cores): SGD, Adam, KFAC, Deflation on CURVES, then the report
	$(BIN)/python scripts/reproduce_paper.py --profile demo $(ARGS)

test: install           ## the test suite
	$(BIN)/python -m pytest -q $(ARGS)

test-cluster: install   ## as root: a one-node SLURM (apt-get installs it), the SLURM tests (tests/cluster), every daemon stopped
	bash tests/cluster/slurm_cluster.sh $(BIN)/python -m pytest -q -p no:cacheprovider tests/cluster $(ARGS)

fisher: install         ## Figure 1 study (layer 5) on one dataset: make fisher ARGS="dataset=mnist"
	$(BIN)/kfac-bench fisher $(ARGS)

bench: install          ## cost of every method against its bare matrix products
	$(BIN)/kfac-bench bench $(ARGS)

report: install         ## Figures 1-2 and the summary table from results/
	$(BIN)/kfac-bench report $(ARGS)

reproduce-paper: install ## PROFILE=authors (default), ablation, fair (about an hour each on 2 cores), verdict (about 8 h), paper (GPU/cluster); estimate printed first
	$(BIN)/python scripts/reproduce_paper.py --profile $(PROFILE) $(ARGS)

verdict: install         ## archive results/verdict into docs/runs/, recompute docs/verdict/ and the README's verdict block
	$(BIN)/python scripts/publish_verdict.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
