#!/usr/bin/env bash
# The browser tests drive Debian's chromium through Playwright (Playwright's own browser
# download does not work offline). Install the package when it is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium is missing and cannot be installed here; browser tests will be skipped" >&2
  exit 0
fi
echo "installing Debian's chromium for the browser tests…"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium >/dev/null
