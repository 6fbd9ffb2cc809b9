#!/usr/bin/env bash
# Fill a wheel folder with everything detox needs except PyTorch, for an air-gapped GPU node whose Python
# already has CUDA PyTorch; run it where there is network, then copy the folder to the node and run
#   bash benchmarks/gpu_check.sh WHEELS_DIR
#
#   bash benchmarks/gpu_wheels.sh WHEELS_DIR [PYTHON_VERSION] [PLATFORM]
#   bash benchmarks/gpu_wheels.sh ~/detox-wheels 3.11 manylinux_2_28_x86_64
#
# PYTHON_VERSION and PLATFORM describe the GPU node's Python (default: this Python's version, and
# manylinux_2_28_x86_64, which covers the older manylinux wheels too). The dependencies (with the test extra) are resolved here with pip's own resolver
# (`pip install --dry-run --report`), then torch, triton and NVIDIA's CUDA wheels (which come with the
# node's PyTorch) are left out and every other pinned requirement is downloaded as a binary wheel for the
# node, with setuptools (to install detox itself from the checkout).
set -euo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
wheels=$1
python=${PYTHON:-python}
version=${2:-$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
platform=${3:-manylinux_2_28_x86_64}  # pip takes the older manylinux tags with it
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$wheels"
report=$(mktemp)
trap 'rm -f "$report" "$report.txt"' EXIT

"$python" -m pip install --quiet --dry-run --ignore-installed --report "$report" "$repo[test]"
"$python" - "$report" > "$report.txt" <<'PY'
import json, re, sys

skip = re.compile(r"^(torch|triton|nvidia-.*|detox)$")  # the node's PyTorch brings the first three
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if not skip.match(re.sub(r"[-_.]+", "-", name).lower()):
        print(f"{name}=={version}")
print("setuptools>=68")
PY
echo "downloading $(wc -l < "$report.txt") requirements for Python $version on $platform into $wheels"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
  --platform "$platform" \
  --dest "$wheels" -r "$report.txt"
cp "$report.txt" "$wheels/requirements.txt"
echo "done: $(ls "$wheels" | wc -l) files in $wheels (requirements.txt lists them); torch is not among them"
