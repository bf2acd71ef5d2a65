# Leadcycle — the two commands of the README, plus lint and bench.
#   make run    virtualenv, install, migrate, demo data, web + Celery worker + beat
#   make test   install what the tests need and run the whole suite (SQLite, then PostgreSQL)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
MANAGE := $(PY) manage.py
HOST ?= 127.0.0.1
# Where the database, mail and broker folders live (crm/settings.py reads the same variable).
VAR_DIR := $(or $(LEADCYCLE_VAR_DIR),var)
PORT ?= 8000
export DJANGO_SETTINGS_MODULE := crm.settings

.PHONY: run test lint format bench install clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Web (gunicorn, static files through whitenoise), a Celery worker and Celery beat on the
# embedded filesystem broker (crm/settings.py creates its folders). Ctrl-C stops all three;
# the database in $(VAR_DIR)/ is kept.
run: install
	mkdir -p $(VAR_DIR)/mail
	$(MANAGE) migrate --noinput
	$(MANAGE) createcachetable
	$(MANAGE) collectstatic --noinput -v 0
	$(MANAGE) seed_demo --if-empty
	@echo
	@echo "  Leadcycle is starting on http://$(HOST):$(PORT)/"
	@echo "  Demo log-ins (password: leadcycle-demo):"
	@echo "    marketing  — marketing staff: contacts, segments, programs, reports"
	@echo "    sales      — sales rep: the MQL queue, accept/reject, deals"
	@echo "    admin      — admin: everything, scoring rules, users"
	@echo "    sales2     — a second sales rep (round-robin, team queue)"
	@echo "  Sent email lands in $(VAR_DIR)/mail/ and on the Outbox page. Ctrl-C stops everything."
	@echo
	@trap 'kill 0' INT TERM EXIT; \
	$(BIN)/celery -A crm worker --loglevel=INFO --concurrency=2 & \
	$(BIN)/celery -A crm beat --loglevel=INFO & \
	$(BIN)/gunicorn crm.wsgi --bind $(HOST):$(PORT) --workers 2 --threads 4 --access-logfile - & \
	wait

# SQLite pass, then PostgreSQL pass; services are started and stopped by tests/run.sh.
# A subset: make test PYTEST_ARGS="tests/crm -k health"
test: install
	bash tests/run.sh $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	bash bench/run.sh

clean:
	rm -rf $(VENV) var
