#!/usr/bin/env bash
# Every ucf101-mini number of docs/RESULTS.md, with `dymsta train` and the committed recipe (3 seeds each).
#
#   bash scripts/reproduce_results.sh [ROOT=../shared/data/ucf101-mini] [OUT=runs/results] [SECTIONS...]
#   python scripts/summarize_results.py runs/results        # the tables, mean +- sample std over seeds
#
# SECTIONS: recipe motion motion_ablations motion_synth main ablations views frames k333 synth (default: all).
# `recipe` runs the ucf101_mini recipe as committed (the linear probe on standardised streams, RESULTS 8.10) and
# every model on its streams; the other motion sections (issue 9) run DyMSTA-Net's motion recipe
# (configs/ucf101_mini_dymsta.yaml, RESULTS 8.2-8.4); the rest are issue 5's rgb-only rows. Caches go to $CACHE
# (default $OUT/cache), shared by runs.
# Wall clock on the project's 2-core CPU: about 1.2 min per DyMSTA-Net run, plus each new cache (the first run of
# main builds the recipe's caches: about 8 min with Lite2).
set -euo pipefail
root=${1:-../shared/data/ucf101-mini}
out=${2:-runs/results}
shift $(( $# > 2 ? 2 : $# ))
sections=${*:-recipe motion motion_ablations motion_synth main ablations views frames k333 synth}
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

recipe_run() { train_rows ucf101_mini "$root" "$@"; }  # recipe_run NAME [--set KEY=VALUE ...]

run() { train_rows ucf101_mini_dymsta "$root" "$@"; }  # run NAME [--set KEY=VALUE ...]: DyMSTA-Net's recipe

synth_run() { train_rows demo "$out/synth_data" "$@"; }  # the synthetic temporal set, the demo's recipe

rgb_only=(--set "data.modalities=[rgb]" --set model.fusion=concat --set model.backbone=efficientnet_lite2)  # issue 5's recipe

for section in $sections; do
  case $section in
    recipe)  # the linear probe on rgb / rgb+rgbdiff / rgb+mv / all; TSN and DyMSTA-Net on all, standardised too
      recipe_run r_linear_rgb --set "data.modalities=[rgb]"
      recipe_run r_linear_rgbdiff --set "data.modalities=[rgb,rgbdiff]"
      recipe_run r_linear_mv --set "data.modalities=[rgb,mv]"
      recipe_run r_linear_all
      recipe_run r_tsn_all --set model.arch=tsn --set optim.lr=0.001  # as cross-validated: weight decay 50
      recipe_run r_dymsta_all --set model.arch=dymsta --set optim.lr=0.001 --set optim.weight_decay=0.05
      ;;
    motion)  # the same streams for every model: rgb / rgb+rgbdiff / rgb+mv / all
      for arch in dymsta tsn linear; do
        run "m_${arch}_rgb" --set model.arch=$arch --set "data.modalities=[rgb]"
        run "m_${arch}_rgbdiff" --set model.arch=$arch --set "data.modalities=[rgb,rgbdiff]"
        run "m_${arch}_mv" --set model.arch=$arch --set "data.modalities=[rgb,mv]"
        run "m_${arch}_all" --set model.arch=$arch
      done
      ;;
    motion_ablations)
      run m_no_dynamic --set model.dynamic=false
      run m_no_attention --set model.attention=false
      run m_no_multiscale --set model.multiscale=false
      run m_fusion_concat --set model.fusion=concat
      run m_fusion_gated --set model.fusion=gated
      ;;
    motion_synth)  # the synthetic temporal set with the demo's recipe as committed, and rgb only
      [[ -d "$out/synth_data" ]] || dymsta synth "$out/synth_data" --groups 96 --clips-per-group 2 --test-groups 12 --seed 1
      synth_run synth_m_dymsta
      synth_run synth_m_dymsta_rgb --set "data.modalities=[rgb]"
      synth_run synth_m_tsn --set model.arch=tsn
      ;;
    main)
      run dymsta "${rgb_only[@]}"
      run tsn "${rgb_only[@]}" --set model.arch=tsn
      run linear "${rgb_only[@]}" --set model.arch=linear
      ;;
    ablations)
      run no_dynamic "${rgb_only[@]}" --set model.dynamic=false
      run no_attention "${rgb_only[@]}" --set model.attention=false
      run no_multiscale "${rgb_only[@]}" --set model.multiscale=false
      run modulate "${rgb_only[@]}" --set model.dynamic_mode=modulate
      run kernels_135 "${rgb_only[@]}" --set "model.temporal_kernels=[1,3,5]"
      run dim128 "${rgb_only[@]}" --set model.dim=128
      run dim512 "${rgb_only[@]}" --set model.dim=512
      ;;
    views)
      run views1 "${rgb_only[@]}" --set cache.train_views=1
      run views2 "${rgb_only[@]}" --set cache.train_views=2
      ;;
    frames)
      run frames8 "${rgb_only[@]}" --set data.num_frames=8
      ;;
    k333)
      run dynamic_k333 "${rgb_only[@]}" --set "model.dynamic_kernel=[3,3,3]"
      ;;
    synth)  # 96 appearance groups x 2 clips per class (the demo's set has 24 x 6)
      [[ -d "$out/synth_data" ]] || dymsta synth "$out/synth_data" --groups 96 --clips-per-group 2 --test-groups 12 --seed 1
      synth_run synth_dymsta "${rgb_only[@]}"
      synth_run synth_tsn "${rgb_only[@]}" --set model.arch=tsn
      synth_run synth_dymsta_k333 "${rgb_only[@]}" --set "model.dynamic_kernel=[3,3,3]"
      ;;
    *)
      echo "unknown section $section (recipe motion motion_ablations motion_synth main ablations views frames k333 synth)" >&2
      exit 2
      ;;
  esac
done
