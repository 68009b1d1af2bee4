#!/usr/bin/env bash
# Set up and run every test: unit tests of minippo, book checks (the book is built, with -W, by the
# browser tests), and every chapter notebook executed by nbval.
#
# Every chapter is executed twice, under two numerics, so that a claim tuned to one trajectory of
# random numbers fails here rather than on a reader's machine (book/how_to_use.md):
#   nbval (chapters/*.ipynb)   MINIPPO_SEED_OFFSET=1 ATEN_CPU_CAPABILITY=default: every seed
#                              shifted by one, torch's portable (non-SIMD) kernels (conftest.py;
#                              override with MINIPPO_NBVAL_NUMERICS=native or NAME=VALUE,...)
#   book build (test_book.py)  natively, seed offset 0: the numbers the rendered book shows.
# The wider matrix (offsets 0-3 x native/default/avx2/MKL_CBWR=COMPATIBLE) is
# `python scripts/robustness.py`; its last full run is recorded in benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    # Debian's Chromium drives the browser tests; tools that download their own browser fail offline.
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
python -m pip install -q -r requirements.txt
python -m pytest "$@"
