# One command to set up and open the course, one to set up and test everything.
#   make lab    create .venv on first use, then open the course in JupyterLab
#   make test   create .venv on first use, then run ruff, pytest and strict nbval
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Notebook kernels must draw figures inline (a stray MPLBACKEND=Agg would drop them from the outputs).
unexport MPLBACKEND

.PHONY: lab test lint exercises execute clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch through pip (it honours a local CPU wheel where one is configured), then the rest
	# through uv, which installs the many small packages several times faster than pip.
	$(PY) -m pip install --quiet -c constraints.txt torch uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -c constraints.txt -e ".[dev]" \
	  || $(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m gptcourse.exercises --check
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

# Regenerate exercises/ from solutions/ (run after editing a solution notebook).
exercises: $(STAMP)
	$(PY) -m gptcourse.exercises

# Re-execute notebooks in place so their stored outputs match what nbval reproduces:
#   make execute NB="notebooks/01_data.ipynb solutions/ch01_data.ipynb"
NB ?= notebooks/*.ipynb solutions/*.ipynb
execute: $(STAMP)
	for nb in $(NB); do \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 --ExecutePreprocessor.kernel_name=python3 $$nb || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
