#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (tests/system/test_ui.py), once.
# Playwright drives this system browser, because its own browser download cannot be fetched
# offline or in CI. Idempotent: does nothing when /usr/bin/chromium already exists. Needs root.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
