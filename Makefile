# One task runner for people and CI. `make dev` and `make test` do all set-up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint fmt typecheck bench clean

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./client -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)  ## the whole system on one machine, with an embedded Redis when REDIS_URL is unset
	$(BIN)/router dev

test: $(STAMP)  ## the test suite; starts a Redis on 127.0.0.1:6379 if none answers, installs chromium, redis-cli and alertmanager if missing
	@[ -n "$$TEST_REDIS_URL" ] || scripts/ensure-redis
	scripts/ensure-chromium
	scripts/ensure-test-tools
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	@for script in bench/[a-z]*.py; do echo "== $$script"; PYTHONPATH=. $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
