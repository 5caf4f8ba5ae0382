#!/usr/bin/env bash
# Issue 19's group CV (docs/RESULTS.md 9.2-9.3): the ucf101_mini recipe, DyMSTA-Net and the linear probe on the
# 320-channel cache (Lite0's last layer trained or frozen) and on the whole grid, module ablations, uint8 rows;
# Lite0's last stage trained from a cache of its input (model.head_conv=stage), 20 epochs, beside the same heads
# at 20 epochs on the 320-channel cache (a stage step costs ~10x the recipe's).
#   bash scripts/cache_cv.sh [SEEDS="0 1 2"] [stage]      # then: python scripts/cv_table.py docs/results/cv/cv_cache_*_s*.json
# One thread per process (OMP_NUM_THREADS=1): two seeds can run side by side on 2 cores. A finished file is skipped.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
out=docs/results/cv
on=model.dynamic=true,model.attention=true,model.multiscale=true
lin=model.arch=linear,optim.lr=0.003,optim.weight_decay=50
for s in ${1:-0 1 2}; do
  cv=(python scripts/group_cv.py --config ucf101_mini --epochs 40 --tail 10 --set cache.dir=runs/cache --seed "$s")
  [[ -f $out/cv_cache_h_s$s.json ]] || "${cv[@]}" --out "$out/cv_cache_h_s$s.json" \
    --variant recipe= --variant dymsta_trained=$on --variant linear_trained=$lin,optim.backbone_lr_scale=0.01 \
    --variant recipe_frozen=model.head_conv=frozen --variant dymsta_frozen=$on,model.head_conv=frozen \
    --variant linear_frozen=$lin,model.head_conv=frozen
  [[ -f $out/cv_cache_full_s$s.json ]] || "${cv[@]}" --out "$out/cv_cache_full_s$s.json" \
    --set model.head_conv=backbone --set cache.grid=full \
    --variant recipe_whole= --variant dymsta_whole=$on --variant linear_whole=$lin
  [[ -f $out/cv_cache_ablations_s$s.json ]] || "${cv[@]}" --out "$out/cv_cache_ablations_s$s.json" \
    --variant dymsta_no_dynamic=model.attention=true,model.multiscale=true \
    --variant dymsta_no_attention=model.dynamic=true,model.multiscale=true \
    --variant dymsta_no_multiscale=model.dynamic=true,model.attention=true
  [[ -f $out/cv_cache_h_uint8_s$s.json ]] || "${cv[@]}" --uint8 --out "$out/cv_cache_h_uint8_s$s.json" \
    --variant recipe_uint8= --variant dymsta_trained_uint8=$on
done
[[ ${2:-} == stage ]] || exit 0
for s in ${1:-0 1 2}; do
  cv=(python scripts/group_cv.py --config ucf101_mini --epochs 20 --tail 5 --set cache.dir=runs/cache --seed "$s")
  for v in recipe dymsta; do
    sets=$([[ $v == dymsta ]] && echo "$on" || echo "")
    [[ -f $out/cv_stage_${v}_s$s.json ]] || "${cv[@]}" --set model.head_conv=stage \
      --out "$out/cv_stage_${v}_s$s.json" --variant "${v}_stage=$sets"
    [[ -f $out/cv_stage_${v}_slow_s$s.json ]] || "${cv[@]}" --set model.head_conv=stage \
      --out "$out/cv_stage_${v}_slow_s$s.json" --variant "${v}_stage_lr0.01=${sets:+$sets,}optim.backbone_lr_scale=0.01"
    [[ -f $out/cv_stage_ref_${v}_s$s.json ]] || "${cv[@]}" --out "$out/cv_stage_ref_${v}_s$s.json" \
      --variant "${v}_20ep=$sets"
  done
done
