#!/usr/bin/env bash
# Download the wheels of benchmarks/gpu/wheels.txt for Python 3.12 on manylinux x86-64 into DIR
# (default .whl/), for a GPU machine that has no network: run.sh installs them from there.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${1:-.whl}
PY=${PYTHON_VERSION:-3.12}
mkdir -p "$DIR"
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$DIR" -r <(grep -v '^#' "$HERE/wheels.txt")
