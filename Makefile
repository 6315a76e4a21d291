# Every target does its own set-up: a fresh clone needs nothing but python3 (>=3.10) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.installed-core
DEV_STAMP := $(VENV)/.installed-dev
# Test extras: the SAM and trainer code paths are tested on CPU (torch 2.14.1 from the local wheel cache);
# geo: pystac and geopandas for the STAC and GeoParquet tests.
TEST_EXTRAS ?= dev,sam,train,geo
# Prefect stays local for every target: its home under the project, no analytics (the Python entry points set the
# same defaults through flows/environment.py; prefect.toml for `prefect ...` run from the repository root).
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# The ephemeral Prefect API server gets 20 s to start by default; a busy 2-core machine needs more.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: setup demo test lint bench bench-prepare bench-gpu bench-scale serve down clean

$(CORE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(CORE_STAMP)

$(DEV_STAMP): $(CORE_STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[$(TEST_EXTRAS)]'
	touch $(DEV_STAMP)

setup: $(DEV_STAMP)

# The main job on the bundled iSAID sample, offline (embedded describer), through to a release in a local store.
demo: $(CORE_STAMP)
	$(VENV)/bin/geopixeld build tests/data/isaid --format isaid --out demo_out --name geopixeld-demo --version 0.1.0

test: $(DEV_STAMP)
	$(PY) -m pytest -q -ra

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check pipeline flows annotations geopixel tests
	$(VENV)/bin/mypy

bench: $(DEV_STAMP)
	$(PY) -m pipeline.bench

# prepare side by side with the iSAID devkit's tiler and a rasterio + OpenCV tiler: whole processes, cold
# starts, alternating runs, medians, tiles/s ratio, decoded pixels compared (also part of `make bench`).
bench-prepare: $(DEV_STAMP)
	$(PY) -m pipeline.bench_prepare

# The whole build (prepare → describe → validate → export → publish → pull, review app start) at N and 8N
# synthetic iSAID images, per stage wall s / peak RSS / tiles/s and growth ratios; threads vs Dask check.
SCALE_N ?= 4
bench-scale: $(DEV_STAMP)
	$(PY) -m pipeline.scale.bench --images $(SCALE_N)

# The CUDA benchmarks alone (SAM: ours vs SamPredictor; GeoPixel training step), for a GPU machine.
bench-gpu: $(DEV_STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/device_bench.sh

# A local Prefect server (SQLite under .prefect/), the work pool, the lmm-api limit, the deployments and a
# worker, all on 127.0.0.1; `make down` stops them by PID.
serve: $(CORE_STAMP)
	VENV=$(VENV) bash flows/serve.sh

down:
	bash flows/down.sh

clean:
	rm -rf $(VENV) demo_out .bench .pytest_cache .mypy_cache .ruff_cache
