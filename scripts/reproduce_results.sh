#!/usr/bin/env bash
# Every ucf101-mini number of docs/RESULTS.md, with `dymsta train` and the committed recipe (3 seeds each).
#
#   bash scripts/reproduce_results.sh [ROOT=../shared/data/ucf101-mini] [OUT=runs/results] [SECTIONS...]
#   python scripts/summarize_results.py runs/results        # the tables, mean +- sample std over seeds
#
# SECTIONS: main ablations views frames k333 synth (default: all). Caches go to $CACHE (default $OUT/cache), shared by runs.
# Wall clock on the project's 2-core CPU: about 1.2 min per DyMSTA-Net run, plus each new cache (the first run of
# main builds the recipe's caches: about 8 min with Lite2).
set -euo pipefail
root=${1:-../shared/data/ucf101-mini}
out=${2:-runs/results}
shift $(( $# > 2 ? 2 : $# ))
sections=${*:-main ablations views frames k333 synth}
seeds=${SEEDS:-0 1 2}
cache=${CACHE:-$out/cache}

train_rows() {  # train_rows CONFIG DATA_ROOT NAME [--set KEY=VALUE ...]: one row of a table, every seed
  local config=$1 data=$2 name=$3
  shift 3
  for seed in $seeds; do
    if [[ -f "$out/$name/s$seed/report.json" ]]; then continue; fi
    dymsta train --config "$config" --out "$out/$name/s$seed" --set data.root="$data" \
      --set cache.dir="$cache" --set train.seed="$seed" "$@" 2>&1 | grep -E "^test:|early stop" || true
  done
}

run() { train_rows ucf101_mini "$root" "$@"; }  # run NAME [--set KEY=VALUE ...]

synth_run() { train_rows demo "$out/synth_data" "$@"; }  # the synthetic temporal set, the demo's recipe

for section in $sections; do
  case $section in
    main)
      run dymsta
      run tsn --set model.arch=tsn
      run linear --set model.arch=linear
      ;;
    ablations)
      run no_dynamic --set model.dynamic=false
      run no_attention --set model.attention=false
      run no_multiscale --set model.multiscale=false
      run modulate --set model.dynamic_mode=modulate
      run kernels_135 --set "model.temporal_kernels=[1,3,5]"
      run dim128 --set model.dim=128
      run dim512 --set model.dim=512
      ;;
    views)
      run views1 --set cache.train_views=1
      run views2 --set cache.train_views=2
      ;;
    frames)
      run frames8 --set data.num_frames=8
      ;;
    k333)
      run dynamic_k333 --set "model.dynamic_kernel=[3,3,3]"
      ;;
    synth)  # 96 appearance groups x 2 clips per class (the demo's set has 24 x 6)
      [[ -d "$out/synth_data" ]] || dymsta synth "$out/synth_data" --groups 96 --clips-per-group 2 --test-groups 12 --seed 1
      synth_run synth_dymsta
      synth_run synth_tsn --set model.arch=tsn
      synth_run synth_dymsta_k333 --set "model.dynamic_kernel=[3,3,3]"
      ;;
    *)
      echo "unknown section $section (main ablations views frames k333 synth)" >&2
      exit 2
      ;;
  esac
done
