#!/usr/bin/env bash
# `vlmforge bench mfu` on a bare Linux GPU machine with python3 (>= 3.11): a venv, torch with
# CUDA, this repo (pip install -e .), then the bench, its JSON written to a file.
#   infra/gpu/bench_mfu.sh [out.json] [bench options, e.g. --peak-tflops 835]
# torch goes in first, at the Makefile's TORCH_PIN, from PyPI (whose Linux x86_64 wheels are
# CUDA builds; set TORCH_INDEX=https://download.pytorch.org/whl/cu128, say, for another); the
# project's `torch>=2.4` is then already met, so no CPU build replaces it.
set -euo pipefail
OUT=$(realpath -m "${1:-bench-mfu.json}")
shift $(( $# > 0 ? 1 : 0 ))
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv-gpu}
TORCH_PIN=${TORCH_PIN:-$(sed -n 's/^TORCH_PIN ?= //p' Makefile)}
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_PIN"
"$VENV/bin/python" -m pip install --quiet -e .
"$VENV/bin/python" -c 'import torch; assert torch.cuda.is_available(), f"torch {torch.__version__} sees no GPU"; print(torch.__version__, torch.cuda.get_device_name())'
"$VENV/bin/vlmforge" bench mfu --json "$@" | tail -n 1 > "$OUT"
cat "$OUT"
