# MineWatch: `make run` sets everything up and serves the app; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PKG_STAMP := $(VENV)/.installed-package

.PHONY: run test demo lint bench screenshots chromium static clean

run: $(PKG_STAMP)
	$(PY) run.py demo --if-empty
	$(PY) run.py serve

test: $(DEV_STAMP) $(PKG_STAMP) chromium
	$(PY) -m pytest -q

demo: $(PKG_STAMP)
	$(PY) run.py demo

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .

# The benchmarks' quick modes (a check that each still runs); full runs: see each script's --help.
bench: $(DEV_STAMP) chromium
	$(PY) -m pytest -q -m bench tests/test_bench.py

# The README's screenshots (docs/img/), from a fresh 12 km demo served on a free loopback port.
screenshots: $(DEV_STAMP) chromium
	$(PY) docs/screenshots.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# The project itself, editable (its dependencies are the pins above), so that processes started
# outside the checkout, like Dask's scheduler and workers, import it; the build backend is pinned
# in pyproject.toml and comes from the package index.
$(PKG_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Browser tests drive Debian's chromium (Playwright's own browser download cannot work offline).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium gdal-bin; }
	@command -v ogrinfo >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q gdal-bin

# Re-vendor htmx and Leaflet from their npm packages into static/ (the committed copies are served).
static:
	cd /tmp && rm -rf mw-static && mkdir mw-static && cd mw-static && npm install --silent htmx.org@2.0.8 leaflet@1.9.4
	cp /tmp/mw-static/node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp /tmp/mw-static/node_modules/htmx.org/LICENSE static/vendor/htmx.LICENSE
	cp /tmp/mw-static/node_modules/leaflet/dist/leaflet.js /tmp/mw-static/node_modules/leaflet/dist/leaflet.css static/vendor/
	cp -r /tmp/mw-static/node_modules/leaflet/dist/images static/vendor/
	cp /tmp/mw-static/node_modules/leaflet/LICENSE static/vendor/leaflet.LICENSE

clean:
	rm -rf $(VENV) instance
