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

# The main job. Until the run loop lands this shows the CLI and checks the machine,
# this repository and the example config; then it becomes the demo swarm.
demo: $(STAMP)
	$(VENV)/bin/gitswarm --help
	$(VENV)/bin/gitswarm doctor gitswarm/templates/minimal.yaml

# The test suite, in parallel. .ci/run calls exactly this.
test: $(STAMP)
	$(VENV)/bin/pytest -n auto -q

bench: $(STAMP)
	$(PY) benchmarks/store_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
