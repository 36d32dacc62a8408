# The README's commands. Every install step lives here, so a fresh clone needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench bench-compare learning-bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

## Set everything up and start simulator, gateway, Celery worker and beat (Ctrl-C stops them).
run: install
	$(BIN)/python scripts/make_run.py

## The whole suite: embedded defaults, then PostgreSQL + Redis when they answer (or can be started).
test: install
	bash scripts/test.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports --no-cache

## Load benchmark against the upstream simulator; bench-compare adds LiteLLM proxy side by side.
bench: install
	$(BIN)/python bench/run.py

bench-compare: install
	$(BIN)/python bench/run.py --compare-litellm

## Learning benchmark: rounds of traffic, synthetic reviews and learning cycles, against always-large/fast.
learning-bench: install
	$(BIN)/python bench/learning_bench.py

clean:
	rm -rf var .bench
