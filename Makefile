# portpatrol: two commands for a new user (make demo, make test), the rest for developers.
# Each target installs what it needs: a virtualenv with the Python packages, and nmap and
# redis-server from Debian's packages when they are missing and we run as root.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint format typecheck imports pytest system-deps console clean

demo: $(STAMP) system-deps
	$(BIN)/portpatrol demo

test: $(STAMP) system-deps
	$(MAKE) --no-print-directory check

check: lint typecheck imports pytest

lint:
	$(BIN)/ruff format --check bot workers tests bench
	$(BIN)/ruff check bot workers tests bench

format:
	$(BIN)/ruff format bot workers tests bench
	$(BIN)/ruff check --fix bot workers tests bench

typecheck:
	$(BIN)/mypy

imports:
	$(BIN)/lint-imports

pytest:
	$(BIN)/pytest

console: $(STAMP) system-deps
	$(BIN)/portpatrol console

system-deps:
	@sh deploy/install-system-deps.sh nmap redis-server

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "portpatrol needs Python 3.11 or newer (found: $$($(PYTHON) --version 2>&1))" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ echo "could not create a virtualenv: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
