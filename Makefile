# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install bnncl with its training extra, install Fashion-MNIST if missing, then
#               pretrain on 4 base classes and learn the other 6 with CWR* + 1-bit latent replay (configs/demo.toml)
#   make test   the same set-up, then the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo

.PHONY: demo test setup data clean bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[train,test]'
	touch $@

setup: $(VENV)/.installed

# Debian's dataset-fashion-mnist, when the files are missing and apt can be used (as root, or through sudo -n).
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "Fashion-MNIST is not in $(FMNIST_DIR) and apt cannot be used here: run 'sudo apt-get install dataset-fashion-mnist'"; exit 1; fi; \
	echo "installing Debian's dataset-fashion-mnist"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist

# The pretrained backbone is kept in $(DEMO_DIR)/pretrain/ and reused by the next run.
demo: setup data
	$(PY) -m bnncl.cli learn --config configs/demo.toml --out $(DEMO_DIR)
	$(PY) -m bnncl.cli summary --checkpoint $(DEMO_DIR)/pretrain/model.pt
	@echo "report: $(DEMO_DIR)/report.md, figures: $(DEMO_DIR)/accuracy.png, $(DEMO_DIR)/matrix_*.png"

# The pretraining benchmark of issue 2 and the continual-learning benchmark of issue 3 (BENCHMARKS.md).

test: setup data
	$(PY) -m pytest -q

bench: setup data
	$(PY) benchmarks/pretrain.py
	$(PY) benchmarks/continual.py

clean:
	rm -rf $(VENV) runs .pytest_cache
