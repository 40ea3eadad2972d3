#!/usr/bin/env bash
# The whole pipeline in one command: collect bags in the sim -> convert -> train -> export -> eval.
# Prints each stage's wall time and where its artefacts land. Re-running resumes: bags and the
# dataset are kept, training resumes from its last checkpoint.
#
#   training/reproduce.sh [WORK_DIR]          (default: runs/reproduce)
#
# Settings (environment): PRESET (cpu), BEHAVIOUR (mixed), EPISODES (200), IMAGE_SIZE (128),
# EVAL_EPISODES (50), EVAL_SEED (5000: fresh seeds, apart from the data's 0..EPISODES-1 and from
# the development seeds 1000-1049 and 2000-2019), TRAIN_ARGS (extra key=value overrides for lompo
# train; with the cpu preset, one thread). Offline all the way: training and the choice of the
# exported checkpoint (the preset's agent.select rule, recorded in the sidecar as
# training.selection) read the dataset alone; the sim only evaluates the exported policy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-runs/reproduce}"
PRESET="${PRESET:-cpu}"
BEHAVIOUR="${BEHAVIOUR:-mixed}"
EPISODES="${EPISODES:-200}"
IMAGE_SIZE="${IMAGE_SIZE:-128}"
EVAL_EPISODES="${EVAL_EPISODES:-50}"
EVAL_SEED="${EVAL_SEED:-5000}"
if [ "$PRESET" = cpu ]; then
  TRAIN_ARGS="${TRAIN_ARGS-threads=1}"
else
  TRAIN_ARGS="${TRAIN_ARGS-}"
fi
LOMPO="${LOMPO:-lompo}"
mkdir -p "$work"

stage() {  # stage NAME ARTEFACT COMMAND...
  local name=$1 artefact=$2; shift 2
  local t0=$SECONDS
  echo "== $name: $*"
  "$@"
  echo "== $name done in $((SECONDS - t0)) s -> $artefact"
}

if [ -d "$work/bags" ] && [ -n "$(ls -A "$work/bags" 2>/dev/null)" ]; then
  echo "== collect: keeping the bags in $work/bags"
else
  stage collect "$work/bags" "$LOMPO" collect --policy "$BEHAVIOUR" --episodes "$EPISODES" \
    --seed 0 --image-size "$IMAGE_SIZE" --out "$work/bags" --quiet
fi
if [ -f "$work/dataset/meta.json" ]; then
  echo "== convert: keeping the dataset in $work/dataset"
else
  stage convert "$work/dataset" "$LOMPO" convert "$work/bags" --out "$work/dataset" \
    --config "$here/convert_drawer.yaml"
fi
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of key=value words
stage train "$work/run" "$LOMPO" train --dataset "$work/dataset" --run "$work/run" --preset "$PRESET" $TRAIN_ARGS
stage export "$work/policy" "$LOMPO" export "$work/run" --out "$work/policy" --verify --overwrite
stage eval "$work/eval" "$LOMPO" eval "$work/policy" --episodes "$EVAL_EPISODES" --seed "$EVAL_SEED" \
  --image-size "$IMAGE_SIZE" --out "$work/eval" --video --quiet
