# The README's two commands are `make demo` and `make test`; both create or update .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is rebuilt only when the dependency files change, so a second `make test` does not reinstall.
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-quality test-fast bench lint imports fmt clean image

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check pip==26.3
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	@# torchrec without its CUDA fbgemm-gpu requirement (the lock has the CPU build and torchrec's other needs).
	$(BIN)/pip install -q --disable-pip-version-check --no-deps torchrec==1.9.2
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: install
	$(BIN)/homefeed demo

# The test tiers select by marker (tests/conftest.py puts every test in exactly one of unit, integration, e2e,
# manifests; `quality` marks the statistical claims). PYTEST_ARGS adds options, e.g. PYTEST_ARGS=--durations=25.
PYTEST := $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: install imports
	$(PYTEST) -m "not quality"

test-quality: install
	$(PYTEST) -m quality

test-fast: install
	$(PYTEST) -m "unit and not quality"

bench: install
	$(BIN)/python -m bench.run

lint: install imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The layer contracts in pyproject.toml ([tool.importlinter]): each layer imports only from those below it, no cycles.
imports: install
	$(BIN)/lint-imports --no-cache

# The project image with podman (image/build.sh says which base, wheels and tag; docs/deploy.md).
image:
	bash image/build.sh

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) workspace .pytest_cache
