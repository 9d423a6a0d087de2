# The two commands of the README. Each sets up what it needs on a fresh machine
# (a virtualenv in .venv with gitswarm installed in editable mode) and then runs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The main job: a sample repository in a temporary folder and a three-wave swarm on it
# with the scripted backend (no agent CLI or model needed), then how to review it.
demo: $(STAMP)
	$(VENV)/bin/gitswarm demo

# The linter, then the test suite in parallel. .ci/run calls exactly this.
test: $(STAMP)
	$(VENV)/bin/ruff check -q gitswarm backends tui hooks tests benchmarks
	$(VENV)/bin/pytest -n auto -q

bench: $(STAMP)
	$(PY) benchmarks/store_bench.py
	$(PY) benchmarks/run_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
