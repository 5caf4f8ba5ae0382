#!/usr/bin/env bash
# R(2+1)D-18 from scratch on ucf101-mini, on a CUDA machine, with the committed recipe and `dymsta train`.
# (On this project's 2-core CPU one epoch takes about 13 min; see docs/RESULTS.md.)
#
#   python scripts/downscale_videos.py ../shared/data/ucf101-mini .devdata/ucf101-mini-128 --short-side 128
#   [EPOCHS=100 WORKERS=5] bash benchmarks/gpu_r2plus1d.sh .devdata/ucf101-mini-128 OUT_DIR [SEEDS...]
#   bash benchmarks/gpu_r2plus1d.sh --smoke --out OUT_DIR   # seconds, on the CPU: 1 epoch on a tiny synthetic set
#
# The videos are re-encoded at a 128 px short side (the model reads 112 px crops of a 128 px short side anyway)
# only so that the set fits the GPU machine's 64 MiB upload. Offline machine: wheels come from .whl/ when present.
set -euo pipefail
smoke=()
if [ "${1:-}" = "--smoke" ]; then
  out=${3:?--smoke --out OUT_DIR}
  root="$out/synth"
  python -m dymsta synth "$root" --groups 3 --test-groups 1 --clips-per-group 1 --frames 16 --size 64
  smoke=(--set train.device=cpu --set data.num_frames=8 --set data.size=64 --set data.resize=64 --set data.workers=0)
  EPOCHS=1 WORKERS=0
  set --
else
  root=${1:?dataset root}
  out=${2:?output folder}
  shift 2
fi
seeds=${*:-0}
if ! python -c "import dymsta" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then python -m pip install -q --no-index --no-deps .whl/*.whl; fi
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# the seeds run side by side on the one GPU, each with its own decode workers
mkdir -p "$out"
start=$(date +%s)
pids=()
for seed in $seeds; do
  python -m dymsta train --config ucf101_mini_dymsta --out "$out/r2plus1d_s$seed" \
    --set data.root="$root" --set model.arch=r2plus1d_18 --set model.head_conv=backbone --set model.pretrained=false --set "data.modalities=[rgb]" \
    --set data.workers="${WORKERS:-5}" --set train.seed="$seed" --set train.epochs="${EPOCHS:-100}" "${smoke[@]}" \
    >"$out/r2plus1d_s$seed.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
echo "all seeds: $(( $(date +%s) - start )) s"
for seed in $seeds; do
  grep -E "^test:|early stop" "$out/r2plus1d_s$seed.log" || tail -n 5 "$out/r2plus1d_s$seed.log"
  rm -rf "$out/r2plus1d_s$seed/checkpoints"  # 120 MB of weights per seed: not needed for the report
done
exit "$failed"
