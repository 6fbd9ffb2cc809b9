#!/usr/bin/env bash
# The whole GPU path in one command on a GPU node, offline (about 8-10 minutes on one H100/H200):
#
#   bash benchmarks/gpu_check.sh WHEELS_DIR     # WHEELS_DIR: filled by benchmarks/gpu_wheels.sh where there is network
#   bash benchmarks/gpu_check.sh -              # detox already installed: skip step 1
#   bash benchmarks/gpu_check.sh - --cpu        # the same steps on a CPU, tiny (checks this script; no GPU)
#
# 0. checks the node: PyTorch >= 2.7 with CUDA, a C compiler, Python's headers and libcuda (torch.compile
#    builds kernels with them), and this Python's version the wheel folder's (python-version.txt);
# 1. installs detox and its dependencies from WHEELS_DIR (pip --no-index: nothing is fetched; the node's
#    CUDA PyTorch is kept; no test extras);
# 2. a GPU smoke study: two jobs of the embedded world (ratios 0 and 10, experiment=smoke) on CUDA with
#    trainer=gpu (bf16, compiled blocks) and method=iti: pre-train -> probe -> ITI -> evaluate, then the
#    sweep's report;
# 3. benchmarks/gpu_throughput.py: OLMo-1B, vocabulary 50 280, 4 x 4096 tokens per GPU, 16 micro-batches a
#    step, through the preset's FSDP2 pre-training path (a world of one on one GPU) and a bare PyTorch loop;
# 4. with two GPUs or more, benchmarks/fsdp_resume.py: a 2-rank FSDP2 pre-training at sequence 2,048 killed
#    after a checkpoint, resumed, and compared with an uninterrupted run (exact resume);
# then prints one summary. Logs and outputs go to $OUT (default: a new folder under /tmp). PYTHON picks
# the interpreter (default: python).
set -uo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
wheels=$1
mode=${2:-gpu}
[[ $mode == --cpu ]] && mode=cpu
python=${PYTHON:-python}
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$(mktemp -d /tmp/detox-gpu-check.XXXXXX)}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MLFLOW_ALLOW_FILE_STORE=true
cd "$repo"
summary=()
failed=0

step() {  # step NAME LOG COMMAND...: run, time and record it
  local name=$1 log=$2 start=$SECONDS
  shift 2
  echo "== $name (log: $log)"
  "$@" > "$log" 2>&1
  local rc=$?
  if [[ $rc == 0 ]]; then
    summary+=("ok      $(printf '%4d' $((SECONDS - start))) s  $name")
  else
    summary+=("FAILED  $(printf '%4d' $((SECONDS - start))) s  $name (exit $rc; last lines of $log above)")
    failed=1
    tail -n 25 "$log"
  fi
}

node_check() {  # what the node must have before anything is installed; one line per problem
  local problems=0
  "$python" - "$mode" <<'PY' || problems=1
import sys
import torch

version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.device_count() if sys.argv[1] == "gpu" else 0, "GPU(s)")
if version < (2, 7):  # FSDP2 checkpoint loading: distribute_tensor(src_data_rank=None)
    sys.exit(f"PyTorch {torch.__version__} is older than 2.7, which detox needs (pyproject.toml)")
if sys.argv[1] == "gpu" and not torch.cuda.is_available():
    sys.exit("PyTorch sees no CUDA GPU (a CPU build, or no driver)")
PY
  if ! command -v "${CC:-cc}" > /dev/null && ! command -v gcc > /dev/null; then
    echo "no C compiler (cc, gcc, or \$CC): torch.compile builds its kernels with one"; problems=1
  fi
  local include
  include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  if [[ ! -f $include/Python.h ]]; then
    echo "no Python headers ($include/Python.h): install python3-dev for torch.compile"; problems=1
  fi
  if [[ $mode == gpu ]] && ! "$python" -c 'import ctypes.util, sys; sys.exit(ctypes.util.find_library("cuda") is None)'; then
    echo "no libcuda.so on the library path (ldconfig): torch.compile's Triton kernels link against it"; problems=1
  fi
  if [[ $wheels != - ]]; then
    local node folder
    node=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    folder=$(cat "$wheels/python-version.txt" 2> /dev/null || echo "unknown (no python-version.txt)")
    if [[ $node != "$folder" ]]; then
      echo "this Python is $node, the wheel folder's is $folder: build it with gpu_wheels.sh WHEELS_DIR $node"; problems=1
    fi
  fi
  return $problems
}

step "node: PyTorch >= 2.7$([[ $mode == gpu ]] && echo ' with CUDA, libcuda'), a compiler, Python headers" \
  "$out/node.log" node_check
if [[ $failed == 0 && $wheels != - ]]; then
  step "install from $wheels (offline)" "$out/install.log" \
    "$python" -m pip install --no-index --find-links "$wheels" -e .
fi
if [[ $failed == 0 ]]; then
  trainer=$([[ $mode == gpu ]] && echo gpu || echo cpu)
  step "smoke study on $trainer: pre-train -> probe -> ITI -> evaluate -> report" "$out/study.log" \
    "$python" launch.py -m experiment=smoke "trainer=$trainer" method=iti ratio=0,10 "root=$out/study" \
    "hydra.sweep.dir=$out/study/sweep"
  bench=()
  [[ $mode == cpu ]] && bench=(--cpu --steps 6 --window 2 --warmup 2 --accumulation 2)
  # ${bench[@]+...}: an empty array under set -u is an error in bash < 4.4
  step "throughput benchmark (FSDP2 path)" "$out/benchmark.log" "$python" benchmarks/gpu_throughput.py \
    ${bench[@]+"${bench[@]}"} --out "$out/benchmark"
  gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())' 2> /dev/null || echo 0)
  if [[ $mode == gpu && $gpus -ge 2 ]]; then
    step "2-rank FSDP2 at seq 2048: checkpoint, kill, exact resume" "$out/resume.log" \
      "$python" benchmarks/fsdp_resume.py "$out/resume"
  fi
fi

echo
echo "================ detox GPU check: summary ($mode) ================"
[[ -f $out/node.log ]] && cat "$out/node.log"
printf '%s\n' ${summary[@]+"${summary[@]}"}
if [[ -f $out/study.log ]]; then
  echo "-- smoke study (each job; the sweep's report in $out/study/sweep/report)"
  grep -E "\] - (insult probability|ToxiGen )" "$out/study.log" | sed 's/.*\] - /  /'
fi
if [[ -f $out/benchmark.log ]]; then
  echo "-- throughput"
  grep -E "tokens/s|stage / bare|parameters" "$out/benchmark.log" | grep -v "^RESULT " | sed 's/^/  /'
fi
[[ -f $out/resume.log ]] && grep -E "^(2-rank|killed|exact)" "$out/resume.log" | sed 's/^/  /'

echo "outputs and logs: $out"
exit $failed
