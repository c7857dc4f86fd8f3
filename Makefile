# trtlab: `make demo` sets up and runs the end-to-end demo; `make test` sets up and runs the tests.
# `make demo` installs only what the demo uses (trtlab[rtx]: no torch, no Jupyter);
# `make test` adds the extras the tests need (notebook, dev, torch) to the same .venv.
PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
DEMO_EXTRAS ?= rtx
EXTRAS      ?= rtx,notebook,dev,torch,study,explorer
OUT         ?= build/demo
DEMO_STAMP  := $(VENV)/.trtlab-demo-installed
STAMP       := $(VENV)/.trtlab-installed

.PHONY: install demo test test-fast test-install notebooks benchmarks clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "trtlab needs Python >= 3.11 (tested: 3.11); $(PYTHON) is $$($(PYTHON) -V 2>&1). Use make PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(DEMO_EXTRAS)]"
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP) $(DEMO_STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/trtlab demo --out $(OUT)

test: $(STAMP)
	TRTLAB_PROGRESS=0 $(BIN)/python -m pytest -n 2 --dist loadfile -q tests

test-fast: $(STAMP)
	TRTLAB_PROGRESS=0 $(BIN)/python -m pytest -q -x tests -m "not notebook and not real and not install"

test-install: $(STAMP)
	TRTLAB_PROGRESS=0 $(BIN)/python -m pytest -q tests -m install

benchmarks: $(STAMP)
	for f in benchmarks/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf build dist .pytest_cache
