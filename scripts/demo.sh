#!/usr/bin/env bash
# Set up a virtual environment and open the dashboard on the bundled demo (http://localhost:8501).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q --no-deps -e .
exec .venv/bin/streamlit run app.py "$@"
