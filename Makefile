# Every target sets itself up: a virtual environment in .venv from the pinned requirements.lock.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test docs bench clean

# installing builds the compiled kernel (setup.py: one library per x86-64 vector level, about 5
# minutes on 2 cores), so its sources are part of what makes the environment current
$(STAMP): requirements.lock pyproject.toml setup.py $(wildcard src/kanlab/csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kanlab demo

# the tests, then the documentation (its examples run as it builds: a failing one fails the target)
test: $(STAMP)
	$(PY) -m pytest
	$(MAKE) docs

DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) requirements-docs.lock
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-docs.lock
	touch $(DOCS_STAMP)

# HTML into docs/_build/html; warnings are errors
docs: $(DOCS_STAMP)
	rm -rf docs/_build docs/_generated
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "documentation: docs/_build/html/index.html"

# Side-by-side benchmarks (minutes); pykan goes into its own environment, never ours.
bench: $(STAMP)
	$(PYTHON) -m venv .venv-pykan
	.venv-pykan/bin/pip install --quiet --disable-pip-version-check -r benchmarks/requirements-pykan.lock
	$(PY) benchmarks/bench_layer.py --pykan-python .venv-pykan/bin/python
	$(PY) benchmarks/bench_pipeline.py --pykan-python .venv-pykan/bin/python
	$(PY) benchmarks/bench_pipeline.py --pykan-python .venv-pykan/bin/python --width 2,1,1 --grids 3,5,10,20,50,100,200 --steps 200 --screen 16
	$(PY) benchmarks/bench_workflow.py --pykan-python .venv-pykan/bin/python
	$(PY) benchmarks/bench_import.py --pykan-python .venv-pykan/bin/python
	$(PY) benchmarks/bench_sklearn.py
	$(PY) benchmarks/bench_feynman.py --pykan-python .venv-pykan/bin/python
	$(PY) benchmarks/bench_deep.py
	$(PY) benchmarks/bench_ddp.py

clean:
	rm -rf $(VENV) .venv-pykan build src/*.egg-info docs/_build docs/_generated
