# trtlab: `make demo` sets up and runs the end-to-end demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.trtlab-installed
EXTRAS ?= rtx,notebook,dev,torch,explorer
OUT    ?= build/demo

.PHONY: install demo test test-fast notebooks benchmarks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	TRTLAB_PROGRESS=$${TRTLAB_PROGRESS:-1} $(BIN)/trtlab demo --out $(OUT)

test: $(STAMP)
	TRTLAB_PROGRESS=0 $(BIN)/python -m pytest -n 2 --dist loadfile -q tests

test-fast: $(STAMP)
	TRTLAB_PROGRESS=0 $(BIN)/python -m pytest -q -x tests -m "not notebook and not real"

benchmarks: $(STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf build .pytest_cache
