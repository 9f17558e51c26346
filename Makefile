# Everything a fresh machine with Python 3.11 and make needs: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MELTANO_VENV := .venv-meltano
TAP_PG_VENV := .venv-tap-postgres
# -qq: pip says nothing but errors, so a first `make demo` prints one line per step.
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip

.PHONY: install demo test lint bench clean postgres-server audit plugin-definition dist fuzz

$(BIN)/target-omnisend: pyproject.toml
	@echo "Installing target-omnisend and its dev tools into $(VENV) (about a minute the first time)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -qq --upgrade pip
	@$(PIP) install -qq -e '.[dev]'
	@touch $@

# Meltano pins its own dependencies; it gets a venv of its own.
$(MELTANO_VENV)/bin/meltano:
	@echo "Installing Meltano into $(MELTANO_VENV)"
	@$(PYTHON) -m venv $(MELTANO_VENV)
	@PIP_DISABLE_PIP_VERSION_CHECK=1 $(MELTANO_VENV)/bin/pip install -qq 'meltano>=4,<5'

# The Postgres end-to-end test reads with meltanolabs-tap-postgres, which pins its own
# singer-sdk and SQLAlchemy: a venv of its own too.
$(TAP_PG_VENV)/bin/tap-postgres:
	@echo "Installing tap-postgres into $(TAP_PG_VENV)"
	@$(PYTHON) -m venv $(TAP_PG_VENV)
	@PIP_DISABLE_PIP_VERSION_CHECK=1 $(TAP_PG_VENV)/bin/pip install -qq 'meltanolabs-tap-postgres==0.10.0'

# PostgreSQL server binaries for that test (Debian keeps them in /usr/lib/postgresql/*/bin).
# Needs root; a no-op when they are there. The test starts a throwaway cluster itself.
postgres-server:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "PostgreSQL server binaries present"; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	fi

install: $(BIN)/target-omnisend

demo: install
	@$(BIN)/python scripts/demo.py

# Two workers, one test file each at a time (a file's PostgreSQL cluster and server stay
# its own): most of a test waits on subprocesses and sockets, so two cores do twice the work.
test: install $(MELTANO_VENV)/bin/meltano $(TAP_PG_VENV)/bin/tap-postgres
	MELTANO_BIN=$(abspath $(MELTANO_VENV))/bin/meltano \
	TAP_POSTGRES_BIN=$(abspath $(TAP_PG_VENV))/bin/tap-postgres \
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# pip-audit of the project venv; fails on known vulnerabilities, says SKIPPED (and does
# not fail) when the vulnerability service is unreachable from this machine.
audit: install
	$(BIN)/python .ci/audit.py

# The Meltano plugin definition (plugin/target-omnisend.yml and meltano.yml's loader) is
# generated from target_omnisend/config_schema.py: run this after changing a setting.
plugin-definition: install
	$(BIN)/python -m target_omnisend.plugin_definition --write

# sdist + wheel in dist/, checked as PyPI would (tests/test_packaging.py does the same in CI).
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The long fuzzing profile (20x the CI one): prints how many inputs each property tried.
fuzz: install
	FUZZ_PROFILE=long $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py --hypothesis-show-statistics

bench: install
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) $(MELTANO_VENV) $(TAP_PG_VENV) .meltano output dist build
