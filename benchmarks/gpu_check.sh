#!/usr/bin/env bash
# The whole GPU path in one command on a GPU node, offline (about 6-8 minutes on one H100/H200):
#
#   bash benchmarks/gpu_check.sh WHEELS_DIR     # WHEELS_DIR: filled by benchmarks/gpu_wheels.sh where there is network
#   bash benchmarks/gpu_check.sh -              # detox already installed: skip step 1
#   bash benchmarks/gpu_check.sh - --cpu        # the same steps on a CPU, tiny (checks this script; no GPU)
#
# 1. installs detox and its dependencies from WHEELS_DIR (pip --no-index: nothing is fetched; the node's
#    CUDA PyTorch is kept);
# 2. a GPU smoke study: two jobs of the embedded world (ratios 0 and 10, experiment=smoke) on CUDA with
#    trainer=gpu (bf16, compiled blocks) and method=iti: pre-train -> probe -> ITI -> evaluate, then the
#    sweep's report;
# 3. benchmarks/gpu_throughput.py: OLMo-1B, vocabulary 50 280, 4 x 4096 tokens per GPU, through the
#    pre-training stage (FSDP2 over every local GPU when there are several) and a bare PyTorch loop;
# then prints one summary. Logs and outputs go to $OUT (default: a new folder under /tmp). PYTHON picks
# the interpreter (default: python).
set -uo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
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
declare -a summary
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

if [[ $mode == gpu ]]; then
  step "CUDA PyTorch" "$out/torch.log" "$python" -c \
    "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.__version__, torch.version.cuda, torch.cuda.device_count(), 'x', torch.cuda.get_device_name())"
fi
if [[ $wheels != - ]]; then
  step "install from $wheels (offline)" "$out/install.log" \
    "$python" -m pip install --no-index --find-links "$wheels" -e ".[test]"
fi
if [[ $failed == 0 ]]; then
  trainer=$([[ $mode == gpu ]] && echo gpu || echo cpu)
  step "smoke study on $trainer: pre-train -> probe -> ITI -> evaluate -> report" "$out/study.log" \
    "$python" launch.py -m experiment=smoke "trainer=$trainer" method=iti ratio=0,10 "root=$out/study" \
    "hydra.sweep.dir=$out/study/sweep"
  bench=()
  [[ $mode == cpu ]] && bench=(--cpu --steps 6 --window 2 --warmup 2)
  step "throughput benchmark" "$out/benchmark.log" "$python" benchmarks/gpu_throughput.py "${bench[@]}" --out "$out/benchmark"
fi

echo
echo "================ detox GPU check: summary ($mode) ================"
[[ -f $out/torch.log ]] && echo "PyTorch: $(tail -n 1 "$out/torch.log")"
printf '%s\n' "${summary[@]}"
if [[ -f $out/study.log ]]; then
  echo "-- smoke study (each job; the sweep's report in $out/study/sweep/report)"
  grep -E "\] - (insult probability|ToxiGen )" "$out/study.log" | sed 's/.*\] - /  /'
fi
if [[ -f $out/benchmark.log ]]; then
  echo "-- throughput"
  grep -E "tokens/s|stage / bare|parameters" "$out/benchmark.log" | grep -v "^RESULT " | sed 's/^/  /'
fi
echo "outputs and logs: $out"
exit $failed
