# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install bnncl with its training extra, install Fashion-MNIST if missing, then
#               pretrain on 4 base classes and learn the other 6 with CWR* + 1-bit latent replay (configs/demo.toml),
#               then export the backbone and run it on the device runtime (bit-packed kernels, no torch), and learn
#               the same stream on the device learner (integer arithmetic at 8/16 bits, 1-bit replay) beside the
#               simulation of the same settings, and on the C library's learner (its state compared with the Python
#               device learner's, bit for bit)
#   make test   the same set-up, then the linter (ruff), the test suite, and the device tests once more compiled
#               for another x86-64 CPU (without AVX-512, or without AVX on a CPU that lacks it): a result that is
#               bit-identical on one CPU only fails here; then the C runtime's tests (make -C runtime test: the kernels
#               and the model runtime on x86-64, AArch64 under qemu and 32-bit x86, and a short fuzz under
#               AddressSanitizer), installing the cross compiler, qemu and the 32-bit libraries if missing
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo

.PHONY: demo test setup data runtime-tools clean bench

$(VENV)/.installed: pyproject.toml setup.py $(wildcard runtime/src/*.c runtime/include/*.h)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[train,test,blocks]'
	touch $@

setup: $(VENV)/.installed

# Debian's dataset-fashion-mnist, when the files are missing and apt can be used (as root, or through sudo -n).
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "Fashion-MNIST is not in $(FMNIST_DIR) and apt cannot be used here: run 'sudo apt-get install dataset-fashion-mnist'"; exit 1; fi; \
	echo "installing Debian's dataset-fashion-mnist"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist

# What make -C runtime test builds with, when missing and apt can be used (as for data): the AArch64 cross compiler
# and qemu-user, gcc's 32-bit multilib (gcc-<version>-multilib: Debian's gcc-multilib would remove the AArch64
# cross compiler), and for the Cortex-M firmware the bare-metal toolchain, newlib and qemu-system-arm.
runtime-tools:
	@pkgs=; \
	command -v aarch64-linux-gnu-gcc >/dev/null || pkgs="$$pkgs gcc-aarch64-linux-gnu"; \
	command -v qemu-aarch64 >/dev/null || pkgs="$$pkgs qemu-user"; \
	command -v arm-none-eabi-gcc >/dev/null || pkgs="$$pkgs gcc-arm-none-eabi"; \
	[ -f /usr/lib/arm-none-eabi/newlib/librdimon.a ] || pkgs="$$pkgs libnewlib-arm-none-eabi"; \
	command -v qemu-system-arm >/dev/null || pkgs="$$pkgs qemu-system-arm"; \
	probe=$$(mktemp); \
	printf 'int main(void) { return 0; }\n' | gcc -m32 -fsanitize=address,undefined -x c - -o $$probe 2>/dev/null \
	  || pkgs="$$pkgs gcc-$$(gcc -dumpversion | cut -d. -f1)-multilib"; \
	rm -f $$probe; \
	if [ -z "$$pkgs" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "the C runtime's tests need$$pkgs and apt cannot be used here: run 'sudo apt-get install$$pkgs'"; exit 1; fi; \
	echo "installing$$pkgs"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkgs

# The pretrained backbone is kept in $(DEMO_DIR)/pretrain/ and reused by the next run.
demo: setup data
	$(PY) -m bnncl.cli learn --config configs/demo.toml --out $(DEMO_DIR)
	$(PY) -m bnncl.cli summary --checkpoint $(DEMO_DIR)/pretrain/model.pt
	$(PY) -m bnncl.cli export $(DEMO_DIR)/pretrain/model.pt --out $(DEMO_DIR)/model.bnn
	$(PY) -m bnncl.cli device predict $(DEMO_DIR)/model.bnn --out $(DEMO_DIR)/device_predict.json
	$(PY) -m bnncl.cli learn --config configs/demo.toml --checkpoint $(DEMO_DIR)/pretrain/model.pt --strategy ar1 \
	    --lr-layer head --q-f 8 --q-b 16 --out $(DEMO_DIR)/simulation-8-16
	@# the device learner starts afresh on the model just exported: a state left by an earlier demo belongs to
	@# the model file of that run (after an upgrade its hash differs, and the learner refuses it)
	rm -f $(DEMO_DIR)/device/state_ar1.bnst $(DEMO_DIR)/device/state_ar1.bnst.prev
	$(PY) -m bnncl.cli device learn $(DEMO_DIR)/model.bnn --config configs/demo.toml --strategy ar1 --lr-layer head \
	    --q-f 8 --q-b 16 --out $(DEMO_DIR)/device
	@# the same learner in C (the C library's, runtime/include/bnn_learner.h), then the two states compared bit for bit
	rm -f $(DEMO_DIR)/device-c/state_ar1_c.bnls
	$(PY) -m bnncl.cli device learn $(DEMO_DIR)/model.bnn --config configs/demo.toml --strategy ar1 --lr-layer head \
	    --q-f 8 --q-b 16 --runtime c --out $(DEMO_DIR)/device-c
	$(PY) -m bnncl.cli device compare $(DEMO_DIR)/model.bnn $(DEMO_DIR)/device/state_ar1.bnst \
	    $(DEMO_DIR)/device-c/state_ar1_c.bnls
	$(PY) -m bnncl.cli report $(DEMO_DIR)/simulation-8-16 $(DEMO_DIR)/device --out $(DEMO_DIR)/side-by-side
	@echo "report: $(DEMO_DIR)/report.md, figures: $(DEMO_DIR)/accuracy.png, $(DEMO_DIR)/matrix_*.png;" \
	    "simulation and device side by side: $(DEMO_DIR)/side-by-side/report.md"

# The benchmarks whose figures are in BENCHMARKS.md: pretraining, continual learning, device inference and its
# equivalence with torch (inference and equivalence use the checkpoint pretrain.py writes), on-device learning and
# its agreement with the simulation (these two use make demo's backbone and model file). The bit-width study
# (benchmarks/bits.py) takes hours and is run by hand, in pieces (see BENCHMARKS.md).

test: setup data runtime-tools
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q
	$(PY) tools/cpu_target.py
	$(MAKE) -C runtime test PYTHON=$(abspath $(PY))

bench: setup data
	$(PY) benchmarks/pretrain.py
	$(PY) benchmarks/continual.py
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/equivalence.py
	$(PY) benchmarks/learning.py --json runs/bench/learning.json
	$(PY) benchmarks/agreement.py --settings head-8-16 cwr-8-16 head-32 --json runs/bench/agreement-head.json
	$(PY) benchmarks/agreement.py --settings multi-8-16-8 --epochs 1 --json runs/bench/agreement-multi.json
	$(PY) benchmarks/frozen_chunk.py --json runs/bench/frozen_chunk.json

clean:
	rm -rf $(VENV) runs .pytest_cache
