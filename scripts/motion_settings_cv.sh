#!/usr/bin/env bash
# How the motion streams are made (data.motion.*), chosen by group cross-validation on the ucf101-mini training
# list (scripts/group_cv.py; the test list is never read). Each setting adds its own stream file to the Lite0
# feature cache (one decode per video for the new stream), then a linear probe (fast; the reference probe of issue 9) is
# cross-validated on rgb + that stream. One JSON line per setting and model in $OUT/motion_settings.jsonl.
#
#   bash scripts/motion_settings_cv.sh [CACHE=runs/cache] [OUT=runs/motion_settings]
set -euo pipefail
cache=${1:-runs/cache}
out=${2:-runs/motion_settings}
mkdir -p "$out"
base=(--config ucf101_mini_dymsta --set cache.dir="$cache" --set model.backbone=efficientnet_lite0 --set model.fusion=sum
      --epochs 30 --tail 10)

cv() {  # cv NAME STREAM [--set data.motion.KEY=VALUE ...]
  local name=$1 stream=$2
  shift 2
  python scripts/group_cv.py "${base[@]}" --set "data.modalities=[rgb,$stream]" "$@" --out "$out/$name.json" \
    --variant "linear=model.arch=linear" | sed "s/^{/{\"setting\": \"$name\", /" >> "$out/motion_settings.jsonl"
}

cv rgbdiff_signed4 rgbdiff --set data.motion.rgbdiff=signed --set data.motion.rgbdiff_scale=4
cv rgbdiff_signed8 rgbdiff --set data.motion.rgbdiff=signed --set data.motion.rgbdiff_scale=8
cv rgbdiff_abs4 rgbdiff --set data.motion.rgbdiff=abs --set data.motion.rgbdiff_scale=4
cv rgbdiff_gray3 rgbdiff --set data.motion.rgbdiff=gray3 --set data.motion.rgbdiff_scale=4
cv mv_image8 mv --set data.motion.mv_scale=8
cv mv_image4 mv --set data.motion.mv_scale=4
cv mv_image16 mv --set data.motion.mv_scale=16
cv mv_image8_window3 mv --set data.motion.mv_window=3
cv mv_image8_segment mv --set data.motion.mv_window=0
cv mv_hist mv --set data.motion.mv_encoding=hist
