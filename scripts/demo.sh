#!/usr/bin/env bash
# Set up a virtual environment and run the end-to-end demo: a short training run of the
# class-conditioned model, then a grid of all ten digits and a GIF of the sampling process.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/diffumnist demo "$@"
