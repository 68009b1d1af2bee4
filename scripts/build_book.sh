#!/usr/bin/env bash
# Set up and build the rendered book, executing every notebook; warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt
jupyter-book build -W -n --keep-going .
echo "Open _build/html/index.html"
