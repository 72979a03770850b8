# kitfs: two commands set up a fresh Debian machine.
#   make demo   install everything, pack the example ModelKit, mount it and show it
#   make test   install everything, lint, type-check and run the test suite
VENV := .venv
PY := $(VENV)/bin/python
KITFS := $(VENV)/bin/kitfs

.PHONY: setup demo test lint bench bench-small clean

setup:
	bash scripts/bootstrap.sh

demo: setup
	bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check kitfs tests bench
	$(VENV)/bin/ruff format --check kitfs tests bench
	$(VENV)/bin/mypy kitfs tests
	$(VENV)/bin/mypy tests/fs/conftest.py

test: lint
	$(PY) -m pytest tests

bench: setup
	$(VENV)/bin/pip install -q -e ".[bench]"
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/run.py --spans
	$(PY) bench/run.py --fleet
	$(PY) bench/run.py --coldpath
	$(PY) bench/run.py --modelload

bench-small: setup
	$(VENV)/bin/pip install -q -e ".[bench]"
	$(PY) bench/run.py --small $(BENCH_ARGS)
	$(PY) bench/run.py --spans --weights-mib 64 --big-mib 0 --files 300 --span-sizes 1MiB,4MiB --output /var/tmp/kitfs-bench/benchmarks-small-spans.md

clean:
	rm -rf $(VENV) .demo build *.egg-info
