#!/usr/bin/env bash
# Every ucf101-mini number of docs/RESULTS.md, with `dymsta train` and the committed recipe (3 seeds each).
#
#   bash scripts/reproduce_results.sh [ROOT=../shared/data/ucf101-mini] [OUT=runs/results] [SECTIONS...]
#   python scripts/summarize_results.py runs/results        # the tables, mean +- sample std over seeds
#
# SECTIONS: cache recipe motion motion_ablations motion_synth main ablations views frames k333 synth (default: all).
# `cache` runs the ucf101_mini recipe as committed (issue 19, RESULTS 9: DyMSTA-Net's head with its modules off on
# standardised streams, Lite0's last layer trained per stream from the 320-channel cache), DyMSTA-Net with its
# modules and the linear probe on the same input. `recipe` (RESULTS 8.10), the other motion
# sections (issue 9: DyMSTA-Net's motion recipe, configs/ucf101_mini_dymsta.yaml, RESULTS 8.2-8.4) and the rest
# (issue 5's rgb-only rows) run as measured then, with the whole backbone (model.head_conv=backbone). Caches go to
# $CACHE (default $OUT/cache), shared by runs; $EXTRA (e.g. "--set train.threads=1") is added to every run.
# Wall clock on the project's 2-core CPU: about 1.2 min per DyMSTA-Net run, plus each new cache (the first run of
# main builds the recipe's caches: about 8 min with Lite2).
set -euo pipefail
root=${1:-../shared/data/ucf101-mini}
out=${2:-runs/results}
shift $(( $# > 2 ? 2 : $# ))
sections=${*:-cache recipe motion motion_ablations motion_synth main ablations views frames k333 synth}
seeds=${SEEDS:-0 1 2}
cache=${CACHE:-$out/cache}
read -ra extra <<< "${EXTRA:-}"  # appended to every run, e.g. EXTRA="--set train.threads=1" beside another job

train_rows() {  # train_rows CONFIG DATA_ROOT NAME [--set KEY=VALUE ...]: one row of a table, every seed
  local config=$1 data=$2 name=$3
  shift 3
  for seed in $seeds; do
    if [[ -f "$out/$name/s$seed/report.json" ]]; then continue; fi
    dymsta train --config "$config" --out "$out/$name/s$seed" --set data.root="$data" \
      --set cache.dir="$cache" --set train.seed="$seed" "$@" "${extra[@]}" 2>&1 | grep -E "^test:|early stop" || true
  done
}

before19=(--set model.head_conv=backbone)  # the layout before issue 19: Lite0's whole backbone before the cache

issue19_run() { train_rows ucf101_mini "$root" "$@"; }  # issue19_run NAME [--set KEY=VALUE ...]: the recipe now

recipe_run() {  # the recipe of RESULTS 8.10 (the linear probe on the whole backbone's features), then the row's
  train_rows ucf101_mini "$root" "${linear_probe[@]}" "${modules_on[@]}" "${before19[@]}" "$@"
}

run() { train_rows ucf101_mini_dymsta "$root" "${before19[@]}" "$@"; }  # DyMSTA-Net's recipe of RESULTS 8.1-8.8

synth_run() { train_rows demo "$out/synth_data" "$@"; }  # the synthetic temporal set, the demo's recipe

rgb_only=(--set "data.modalities=[rgb]" --set model.fusion=concat --set model.backbone=efficientnet_lite2)  # issue 5's recipe

modules_on=(--set model.dynamic=true --set model.attention=true --set model.multiscale=true)  # DyMSTA-Net itself

linear_probe=(--set model.arch=linear --set optim.lr=0.003 --set optim.weight_decay=50)  # RESULTS 8.10's head

for section in $sections; do
  case $section in
    cache)  # issue 19: the recipe as committed; DyMSTA-Net (modules on) and the linear probe on its input
      issue19_run c_recipe
      issue19_run c_dymsta_trained "${modules_on[@]}"
      issue19_run c_linear_trained "${linear_probe[@]}" --set optim.backbone_lr_scale=0.01
      ;;
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
      echo "unknown section $section (cache recipe motion motion_ablations motion_synth main ablations views frames k333 synth)" >&2
      exit 2
      ;;
  esac
done
