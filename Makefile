VENV := .venv
SETUP_STAMP := $(VENV)/.setup-complete

.PHONY: setup run test lint

$(SETUP_STAMP): tools/setup_env.sh tools/cpu_torch_workarounds.py requirements.txt requirements-dev.txt
	bash tools/setup_env.sh
	touch $(SETUP_STAMP)

setup: $(SETUP_STAMP)

run: setup
	$(VENV)/bin/python tools/run_example.py $(WORKFLOW)

test: lint
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
