#!/usr/bin/env bash
# Set up and run every test: unit tests of minippo, book checks (the book is built, with -W, by the
# browser tests), and every chapter notebook executed by nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    # Debian's Chromium drives the browser tests; tools that download their own browser fail offline.
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
python -m pip install -q -r requirements.txt
python -m pytest "$@"
