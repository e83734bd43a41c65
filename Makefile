# `make demo` and `make test` set everything up on a fresh machine (a .venv with torch,
# torchkiln and its tools), then run. Override PYTHON or TORCH_PACKAGES if needed.
PYTHON ?= python3
VENV ?= .venv
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.torchkiln-installed
PYTEST_ARGS ?= -n 2

.PHONY: setup demo test lint format benchmarks clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned, so no resolver swaps in another build later.
	$(BIN)/python -m pip install --quiet $(TORCH_PACKAGES)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

# The bundled example through DVC: MNIST digits, small CNN, six stages, then its metrics.
demo: setup
	$(BIN)/kiln repro mnist_cnn-export
	$(BIN)/dvc metrics show runs/mnist_cnn/train/metrics.json runs/mnist_cnn/evaluate/metrics.json runs/mnist_cnn/export/metrics.json

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

benchmarks: setup
	$(BIN)/python benchmarks/validate_speed.py
	$(BIN)/python benchmarks/train_overhead.py --threads 1
	$(BIN)/python benchmarks/pipeline_overhead.py

clean:
	rm -rf runs .kiln
