#!/usr/bin/env bash
# Stage what a GPU machine without package registries needs for tuneline's GPU benchmarks and recipe, into .gpu/
# (keep it out of git: echo /.gpu/ >> .git/info/exclude). Run from the project root, with ../shared beside it:
#   bash scripts/gpu-stage.sh
# Then send the parts one or two at a time (each call carries at most 64 MiB) and, on the GPU machine, start
# every command with: eval "$(bash .gpu/setup.sh | grep ^export)" && export TUNELINE_MIRROR=$PWD/.gpu/mirror
#   carry .gpu/w1 .gpu/m1 .gpu/setup.sh                wheels, model part 1
#   carry .gpu/m2 .gpu/mirror                           model part 2, ViGGO
#   carry .gpu/w2                                       bitsandbytes (QLoRA setups only)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ../shared/gpu/stage.sh .gpu
# The `gpu` extra's pure-Python kernels (training.liger_kernel); its Triton comes with CUDA builds of torch.
python3 -m pip download -q --no-deps -d .gpu/w1 "$(grep -oE '"liger-kernel==[^"]+"' pyproject.toml | tr -d '"')" \
  2>&1 | grep -v "is ignored" || true
mkdir -p .gpu/mirror/datasets/gem && cp -r ../shared/mirror/datasets/gem/viggo .gpu/mirror/datasets/gem/
du -sh .gpu/*
