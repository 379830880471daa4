# The two commands in the README:
#   make run    set up .venv if needed, then `dvc repro` the whole pipeline
#   make test   set up .venv if needed, then lint, format check and pytest
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(abspath $(VENV))/bin
# Stage commands in dvc.yaml say `python`: it must be the venv's.
export PATH := $(BIN):$(PATH)

.PHONY: run test setup lint flow clean-venv

run: $(VENV)/.installed
	dvc repro
	@echo "Done. Open samples/grid.png (and data/processed/contact_sheet.png, data/dedup/groups.png)."

test: $(VENV)/.installed lint
	pytest

lint: $(VENV)/.installed
	ruff check .
	ruff format --check .

flow: $(VENV)/.installed
	python -m flows

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean-venv:
	rm -rf $(VENV)
