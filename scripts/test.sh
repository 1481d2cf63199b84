#!/usr/bin/env bash
# Set up a virtual environment and run the whole test suite: lint, format check, tests.
# The browser tests drive Debian's chromium, installed here once (needs root, as in CI).
# MNIST is read from $DIFFUMNIST_DATA (default ../shared/data, which is never written).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_browser.sh
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export DIFFUMNIST_DATA="${DIFFUMNIST_DATA:-$(cd .. && pwd)/shared/data}"
exec .venv/bin/pytest --durations=15 "$@"
