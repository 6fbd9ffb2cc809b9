#!/usr/bin/env bash
# Fill a wheel folder with everything the GPU check needs except PyTorch, for an air-gapped GPU node whose
# Python already has CUDA PyTorch (>= 2.7); run it where there is network, then copy the folder to the node:
#   bash benchmarks/gpu_check.sh WHEELS_DIR
#
#   bash benchmarks/gpu_wheels.sh WHEELS_DIR [PYTHON_VERSION] [PLATFORM]
#   bash benchmarks/gpu_wheels.sh ~/detox-wheels 3.11 manylinux_2_28_x86_64
#   TORCH=torch==2.13.0 bash benchmarks/gpu_wheels.sh WHEELS_DIR   # torch too (the CPU air-gap rehearsal)
#
# PYTHON_VERSION and PLATFORM describe the GPU node's Python (default: this Python's version, and
# manylinux_2_28_x86_64: wheels for it or any older manylinux, e.g. numpy's manylinux_2_17). detox's own requirements (no test
# extras) are resolved here by pip (`pip install --dry-run --report`); torch, triton and NVIDIA's CUDA
# wheels (the node's PyTorch brings them) are left out unless TORCH names a torch; every other pinned
# requirement is downloaded as a binary wheel for the node, and one published only as source (e.g.
# antlr4-python3-runtime for hydra-core) is built into a wheel here with `pip wheel`. The folder's
# requirements.txt lists them and python-version.txt the Python they are for (gpu_check.sh checks it).
set -euo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
wheels=$(mkdir -p "$1" && cd "$1" && pwd)
python=${PYTHON:-python}
version=${2:-$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
platform=${3:-manylinux_2_28_x86_64}
# pip takes --platform literally: list the older manylinux tags the node's glibc also runs
platforms=(--platform "$platform")
if [[ $platform =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
  for ((minor = BASH_REMATCH[1] - 1; minor >= 5; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_${BASH_REMATCH[2]}")
  done
  platforms+=(--platform "manylinux2014_${BASH_REMATCH[2]}" --platform "manylinux2010_${BASH_REMATCH[2]}"
              --platform "manylinux1_${BASH_REMATCH[2]}")
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
report=$(mktemp)
trap 'rm -f "$report" "$report.txt"' EXIT

"$python" -m pip install --quiet --dry-run --ignore-installed --report "$report" "$repo" ${TORCH:+"$TORCH"}
TORCH=${TORCH:-} "$python" - "$report" > "$report.txt" <<'PY'
import json, os, re, sys

keep_torch = bool(os.environ["TORCH"])
skip = re.compile(r"^(triton|nvidia-.*|detox)$" if keep_torch else r"^(torch|triton|nvidia-.*|detox)$")
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if not skip.match(re.sub(r"[-_.]+", "-", name).lower()):
        print(f"{name}=={version}")
print("setuptools>=68")  # to install detox itself from the checkout
print("wheel")
PY
echo "collecting $(wc -l < "$report.txt") requirements for Python $version on $platform into $wheels"
# --no-deps (the report resolved them) lets pip take a source archive where no wheel exists for the node
"$python" -m pip download --quiet --no-deps --python-version "$version" "${platforms[@]}" --dest "$wheels" \
  -r "$report.txt"
built=()
for source in "$wheels"/*.tar.gz "$wheels"/*.zip; do
  [[ -e $source ]] || continue
  # published only as source: build it here (a pure-Python sdist makes a py3-none-any wheel for any node)
  "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$source"
  rm "$source"
  built+=("$(basename "$source")")
done
cp "$report.txt" "$wheels/requirements.txt"
echo "$version" > "$wheels/python-version.txt"
echo "built from source: ${built[*]-none}"
echo "done: $(ls "$wheels"/*.whl | wc -l) wheels, $(du -sh "$wheels" | cut -f1) in $wheels (requirements.txt lists them)$([[ -z ${TORCH:-} ]] && echo '; torch is not among them')"
