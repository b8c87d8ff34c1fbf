#!/usr/bin/env bash
# The browser test of `efm label` (tests/test_label_browser.py) drives Debian's chromium through
# chromium-driver. `make test` calls this first: it installs both when missing (as root, with
# apt-get: what CI runs as); otherwise it says how, and the test then fails with the same advice
# rather than skipping. EFM_SKIP_BROWSER=1 skips that test on purpose (and this script).
set -euo pipefail
if [ "${EFM_SKIP_BROWSER:-}" = 1 ]; then exit 0; fi
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "scripts/browser_env.sh: installing chromium and chromium-driver (apt-get) for the labelling page's browser test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  exit 0
fi
echo "scripts/browser_env.sh: /usr/bin/chromium and /usr/bin/chromedriver are missing and this is not root with apt-get:" \
     "run 'sudo apt-get install -y chromium chromium-driver' (Debian), or set EFM_SKIP_BROWSER=1 to skip the browser test" >&2
