# stemwatch: two commands do everything.
#   make demo   - set up .venv, then simulated microscope -> analyzer -> dashboard in the browser
#   make test   - set up .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# The CPU build of torch (used by `stemwatch train` and the export tests).
TORCH  ?= torch==2.13.0

.PHONY: demo test test-slow bench venv clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "stemwatch needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e '.[dev,train]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m stemwatch demo

# the default suite on every core (at most 4 worker processes; a test file stays on one worker, so
# its module fixtures are made once; files go out longest first, in tests/conftest.py's order, and
# each worker's ONNX Runtime and OpenBLAS get their share of the cores); `pytest -q` alone runs it
# in one process
test: venv
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

test-slow: venv
	$(PY) -m pytest -q -m slow --hypothesis-profile explore

bench: venv
	$(PY) -m stemwatch bench all --out bench_results

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
