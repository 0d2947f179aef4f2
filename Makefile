# cloudmesh-transfer: `make demo` installs everything and runs a real transfer; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
AZURITE := deploy/node_modules/.bin/azurite-blob

.PHONY: install test test-records test-cluster serve demo emulators stop clean upgrade-deps

install: $(BIN)/cms $(AZURITE)

# The exact versions in constraints.txt (see README, "Installing"); setup.py keeps its ranges.
$(BIN)/cms: setup.py requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet -e . -c constraints.txt
	touch $@

# Pins the newest versions that requirements*.txt allow, for Python 3.11 on Linux, with uv's
# resolver (installed into the venv); the next `make install` (or `make test`) installs them.
upgrade-deps: $(BIN)/cms
	$(BIN)/pip install --quiet --upgrade uv
	$(BIN)/uv pip compile --upgrade --quiet requirements-dev.txt --output-file=constraints.txt \
		--python-version=3.11 --python-platform=linux --custom-compile-command="make upgrade-deps"

$(AZURITE): deploy/package.json
	npm install --prefix deploy --no-audit --no-fund --loglevel=error
	touch $@

test: install
	$(BIN)/python -m pytest -q tests

# Only the transfer-record contract (SQLite, and MongoDB on mongomock); against a real MongoDB server:
# CMS_TRANSFER_TEST_MONGO_URL=mongodb://host:27017 make test-records
test-records: $(BIN)/cms
	$(BIN)/python -m pytest -q tests/test_records.py

# Only the cluster tests (real dask scheduler and worker processes, SQLite records shared on this
# host); with every process keeping the records in a real MongoDB server instead:
# CMS_TRANSFER_TEST_MONGO_URL=mongodb://host:27017 make test-cluster
test-cluster: $(BIN)/cms
	$(BIN)/python -m pytest -q tests/test_cluster.py

# The REST service on 127.0.0.1:8400 (HOST=... PORT=... to change); see README, "REST service".
HOST ?= 127.0.0.1
PORT ?= 8400
serve: $(BIN)/cms
	$(BIN)/cms transfer serve --host=$(HOST) --port=$(PORT)

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash deploy/demo.sh

emulators: install
	$(BIN)/python deploy/emulators.py start .demo

stop:
	$(BIN)/python deploy/emulators.py stop .demo

clean:
	rm -rf $(VENV) deploy/node_modules .demo

# Benchmark cms transfer against rclone and AzCopy on the emulators (see benchmarks/README.md);
# extra options go in ARGS, e.g. make bench ARGS="--sweep --runs 1".
.PHONY: bench
bench: install
	$(BIN)/python benchmarks/bench.py $(ARGS)

# The scale benchmark: cms and rclone at 100,000 objects and more (see benchmarks/README.md, "Scale");
# e.g. make bench-scale ARGS="--case memory-100k,memory-1m" or ARGS="--count 5000".
.PHONY: bench-scale
bench-scale: install
	$(BIN)/python benchmarks/scale.py $(ARGS)

# status and statistic with a million objects recorded (benchmarks/records.py); e.g. ARGS="--count 100000".
.PHONY: bench-records
bench-records: install
	$(BIN)/python benchmarks/records.py $(ARGS)

# One transfer on this host alone, on 1 and on 2 Dask workers, the scheduler's cost per task, and the
# model of N hosts (benchmarks/cluster.py; README, "Running on a cluster"); e.g. ARGS="--big 64 --runs 1".
.PHONY: bench-cluster
bench-cluster: install
	$(BIN)/python benchmarks/cluster.py $(ARGS)

# What an open dashboard costs the service, polling once a second (benchmarks/dashboard.py; README,
# "Dashboard"); e.g. ARGS="--transfers 1000 --requests 50".
.PHONY: bench-dashboard
bench-dashboard: install
	$(BIN)/python benchmarks/dashboard.py $(ARGS)

# The dashboard's browser tests (Debian's chromium; every page's screenshot in build/screenshots/TEST/),
# and the README's two screenshots copied from them into tests/screenshots.
SHOWN := build/screenshots/test_a_folder_copy_started_from_the_form_is_watched_to_100_percent
.PHONY: screenshots
screenshots: install
	$(BIN)/python -m pytest -q tests/test_dashboard.py
	mkdir -p tests/screenshots
	cp $(SHOWN)/transfers.png $(SHOWN)/transfer.png tests/screenshots/
