# `make demo` and `make test` set everything up on a fresh machine (a .venv with torch,
# torchkiln and its tools), then run. Override PYTHON or TORCH_PACKAGES if needed.
PYTHON ?= python3
VENV ?= .venv
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.torchkiln-installed
PYTEST_ARGS ?= -n 2

.PHONY: setup browser demo test lint format benchmarks clean

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

# Headless Chromium for the browser test of `kiln report` (tests/test_report.py): installed
# from the Debian packages when missing and this user can (root with apt-get); otherwise
# that one test is skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	command -v google-chrome >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the kiln report browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      >/dev/null) || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "no chromium and no root apt-get: the kiln report browser test will be skipped"; fi; }

test: setup browser
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

# Each benchmark prints its figures, the CPU and the load average, and a PASS/FAIL (or INFO)
# verdict line, and exits 1 on a miss. All of them run; their verdicts are repeated at the
# end, and the target fails if any did. The defaults are the real measurement (8 minutes
# on a quiet 2-core AVX-512 EPYC, well over an hour on a loaded machine: benchmarks/README.md);
# `make benchmarks BENCH_ARGS=--quick` checks every script end to end in about 18 minutes
# on a loaded 2-core machine; its figures are not the measurement.
BENCHMARKS := validate_speed.py train_overhead.py train_process.py distributed.py rnn_paths.py \
	pipeline_overhead.py
BENCH_ARGS ?=

benchmarks: setup
	@log=$$(mktemp); status=0; \
	for b in $(BENCHMARKS); do \
		echo "== benchmarks/$$b $(BENCH_ARGS)"; \
		{ $(BIN)/python benchmarks/$$b $(BENCH_ARGS); echo $$? > $$log.rc; } 2>&1 | tee -a $$log; \
		test "$$(cat $$log.rc)" = 0 || status=1; \
	done; \
	echo "== verdicts"; grep -E '^(PASS|FAIL|INFO)' $$log; rm -f $$log $$log.rc; exit $$status

clean:
	rm -rf runs .kiln
