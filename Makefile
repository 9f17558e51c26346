# Everything a fresh machine with Python 3.11 and make needs: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MELTANO_VENV := .venv-meltano
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip

.PHONY: install demo test lint bench clean

$(BIN)/target-omnisend: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

# Meltano pins its own dependencies; it gets a venv of its own.
$(MELTANO_VENV)/bin/meltano:
	$(PYTHON) -m venv $(MELTANO_VENV)
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(MELTANO_VENV)/bin/pip install -q 'meltano>=4,<5'

install: $(BIN)/target-omnisend

demo: install
	$(BIN)/python scripts/demo.py

test: install $(MELTANO_VENV)/bin/meltano
	MELTANO_BIN=$(abspath $(MELTANO_VENV))/bin/meltano $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) $(MELTANO_VENV) .meltano output
