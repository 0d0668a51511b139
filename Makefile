# shipml — one Makefile drives local work and CI.
# `make demo` and `make test` install what they need themselves (venv, pinned pip packages, the
# pinned CDK CLI from npm) and are quick on the second run: each install step is a stamp file that
# is rebuilt only when the files it depends on change.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYSTAMP := $(VENV)/.installed
NODESTAMP := node_modules/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test unit infra synth lint lock docs load clean venv node

venv: $(PYSTAMP)
node: $(NODESTAMP)

$(PYSTAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(NODESTAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## demo: the main job end to end on the local backend (data -> 2-worker training -> registry -> prediction)
demo: $(PYSTAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/fraud/demo.sh

## test: lint, then the whole suite (unit, integration, infrastructure incl. `cdk synth`, end to end)
test: $(PYSTAMP) $(NODESTAMP)
	$(VENV)/bin/ruff check .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

unit: $(PYSTAMP)
	$(PY) -m pytest -q tests/unit

infra: $(PYSTAMP) $(NODESTAMP)
	$(PY) -m pytest -q tests/infrastructure

## synth: synthesize every stack offline into cdk.out/ (no AWS credentials needed)
synth: $(PYSTAMP) $(NODESTAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npx --no-install cdk synth --quiet

lint: $(PYSTAMP)
	$(VENV)/bin/ruff check .

## load: 20,000 requests from 8 clients to `shipml serve` on 127.0.0.1 while `live` is promoted twice
load: $(PYSTAMP)
	$(PY) bench/load.py --requests 20000 --clients 8

## docs: regenerate docs/configuration.md and docs/openapi.json from the code (a test checks them)
docs: $(PYSTAMP)
	$(PY) scripts/generate_docs.py

## lock: regenerate constraints.txt from the current venv after changing a pin
lock: $(PYSTAMP)
	( echo '# Full lock of the resolved environment (pip freeze). Regenerate with `make lock` after changing a pin.'; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^-e' | sed 's/+cpu$$//' ) > constraints.txt

clean:
	rm -rf cdk.out .shipml .pytest_cache
