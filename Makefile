# Two entry points: `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test venv bench-venv clean gpu-wheels gpu-check

$(STAMP): pyproject.toml setup.py kanmodel/csrc/spline_kernels.cpp
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pinned first: this version resolves to the CPU wheel here; an unpinned torch pulls CUDA.
	$(BIN)/pip install -q torch==2.13.0
	# No build isolation: setup.py compiles kanmodel/csrc against the torch installed above.
	$(BIN)/pip install -q 'setuptools>=68' wheel
	$(BIN)/pip install -q --no-build-isolation -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/kanserve up

test: $(STAMP)
	# KANMODEL_REQUIRE_KERNELS: a missing compiled extension fails the suite instead of
	# silently testing only the torch fallback.
	OMP_WAIT_POLICY=PASSIVE KANMODEL_REQUIRE_KERNELS=1 $(BIN)/python -m pytest -q

# PyKAN 0.2.8 for the comparisons in bench/ (never a dependency of the project itself).
bench-venv:
	test -x .bench-venv/bin/python || $(PYTHON) -m venv .bench-venv
	.bench-venv/bin/pip install -q torch==2.13.0
	.bench-venv/bin/pip install -q pykan==0.2.8 numpy scipy sympy matplotlib pandas scikit-learn pyyaml tqdm setuptools

# The CUDA check (scripts/gpu_check.sh): `make gpu-wheels` here, where pip reaches PyPI,
# fetches what the CUDA machine lacks (Python 3.12 wheels, about 17 MiB) into wheels/gpu;
# there, with wheels/gpu carried along, `make gpu-check OUT=dir` (no venv: its python3 has torch).
# Any existing venv will do (its installed versions are the ones pinned).
gpu-wheels:
	test -x $(BIN)/python || $(MAKE) venv
	$(BIN)/python scripts/gpu_wheels.py wheels/gpu

OUT ?= .gpu-check
gpu-check:
	bash scripts/gpu_check.sh $(OUT)

clean:
	rm -rf $(VENV) .kanserve .pytest_cache
