#!/usr/bin/env bash
# Set up a virtual environment with the test dependencies and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -r requirements-dev.txt
.venv/bin/pip install -q --no-deps -e .
.venv/bin/python -m pytest -q "$@"
