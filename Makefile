# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: install demo demo-quick replicate test test-all lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first: an unpinned torch pulls GBs of CUDA packages. The lm-eval extra is
# installed too, so tests/eval/test_lm_eval_agreement.py runs in `make test` instead of being skipped; the ray
# extra (~240 MB, ~1.5 min) so that the Ray executor tests run with the slow tests.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,lm-eval,datatrove,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hf-select demo $(DEMO_ARGS)

demo-quick: $(STAMP)
	$(BIN)/hf-select demo --quick $(DEMO_ARGS)

# Every paper's direction in its own setting, scaled down (benchmarks/replications/*.yaml -> docs/results.md).
# Resumable: a re-run repeats no finished run. It reuses the demo cache (world, SmolLM2), built here if missing.
replicate: $(STAMP)
	test -f .hf_select_cache/models/SmolLM2-135M-Instruct/config.json || $(BIN)/hf-select build-demo
	for f in benchmarks/replications/*.yaml; do $(BIN)/hf-select replicate $$f $(REPLICATE_ARGS) || exit $$?; done

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
