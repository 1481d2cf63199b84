#!/usr/bin/env bash
# Set up a virtual environment and run the offline demo: the shipped class-conditioned model
# samples all ten digits (no training, no MNIST, no GPU) and writes demo/grid.png and
# demo/process.gif (the recipe's 300-step sampling process). Flags go to `diffumnist demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/diffumnist demo "$@"
