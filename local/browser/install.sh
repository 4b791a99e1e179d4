#!/usr/bin/env bash
# Headless Chromium and its driver for the console's browser test (tests/integration/test_console_browser.py).
# Debian's own packages (the browser and the matching chromedriver come from one source package, so their
# versions always agree). Installs only what is missing; needs root for apt (CI runs as root). Without root
# and without the packages it says so and exits 0: the browser test then reports what is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "local/browser/install.sh: chromium/chromedriver missing; run as root: apt-get install chromium chromium-driver" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
chromium --version
