#!/usr/bin/env bash
# Every GPU figure of issue 18 in one run of about 10 minutes on one GPU (H200: 16 cores, torch 2.11,
# Python 3.12, no network), each written as JSON into OUT:
#   1. step_throughput_h200.json  open_clip's CLIP step (a) against this project's CLIP (b), exact ITO (c)
#                                 and ITO with patch dropout (d); ViT-B/32 at batch 512 and ViT-B/16 at
#                                 batch 256, eager and compiled (benchmarks/step_throughput.py)
#   2. loader_throughput_h200.json the old data path (per-sample augmentation in the loader) against the new
#                                 one (decode once, batched augmentation on the GPU), per loader core, from
#                                 224 px JPEG shards, and make_views' share of the ITO step (loader_throughput.py)
#   3. train_{cpu,gpu}_decode.json a 200-step ITO ViT-B/32 run at batch 512 from 224 px JPEG shards written
#                                 by `ito-sweeps make-shards`, the new data path with JPEGs decoded in the
#                                 loader (data.decode=cpu) and on the GPU (gpu): median train/samples_per_s,
#                                 mean train/data_wait_frac. The old path no longer exists in the trainer:
#                                 stage 2 measures it against the new one side by side.
#   4. sweep_overhead_h200.json   a 2-trial sweep on one GPU worker against the same configs as plain
#                                 `train()` in one process: Ray's time per trial outside training and Ray's
#                                 samples/s over plain (benchmarks/sweep_overhead.py). One-worker trials train in
#                                 their Tune trial (issue 17); Train jobs need two or more workers, so two GPUs.
# plus stages.jsonl (each stage's exit status and wall seconds) and each stage's log.
#
#   ../shared/tools/build_gpu_bundle.sh          # here, once: .gpubundle/ray-site-cp312.tar.xz (Ray, MLflow, open_clip)
#   bash benchmarks/gpu_suite.sh OUT             # on the GPU host, from the project root, .gpubundle carried
#   bash benchmarks/gpu_suite.sh OUT --dry-run   # on any CPU: every stage at toy sizes (tiny model, 64 px)
#
# A stage that fails or runs past its time limit is recorded in stages.jsonl and the next one starts; rerun
# one stage with STAGES="train sweep" bash benchmarks/gpu_suite.sh OUT.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_suite.sh OUT [--dry-run]}
DRY=${2:-}
STAGES=${STAGES:-"step loader train sweep"}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}

if ! $PY -c "import ray, mlflow, open_clip" 2>/dev/null; then
  BUNDLE=.gpubundle/ray-site-cp312.tar.xz
  [ -f "$BUNDLE" ] || { echo "no Ray/MLflow/open_clip and no $BUNDLE: run ../shared/tools/build_gpu_bundle.sh here first" >&2; exit 2; }
  mkdir -p /tmp/site && tar -xJf "$BUNDLE" -C /tmp/site
  export PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [ "$DRY" = "--dry-run" ]; then
  SUFFIX=dryrun DEVICE=cpu MODEL=tiny SIZE=64 BATCH=32 STEPS=6 LOADERS=1 TRAIN=600 DECODES="cpu" BF16=false LIMIT=300
  STEP_ARGS="--tiny" LOADER_ARGS="--quick"
else
  SUFFIX=h200 DEVICE=cuda MODEL=ViT-B-32 SIZE=224 BATCH=512 STEPS=200 LOADERS=14 TRAIN=20000 DECODES="cpu gpu" BF16=true LIMIT=420
  STEP_ARGS="--steps 20 --warmup 5" LOADER_ARGS="--seconds 4 --repeats 2"
fi

stage() {  # stage NAME COMMAND...: run it with a time limit, its output in OUT/NAME.log
  local name=$1 start=$SECONDS rc
  shift
  echo "== $name: $*"
  timeout "$LIMIT" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"wall_s\": $((SECONDS - start))}" | tee -a "$OUT/stages.jsonl"
}

summarise() {  # summarise RUN_FOLDER OUT.json: the throughput figures of one `ito-sweeps train` run
  $PY - "$1" "$2" <<'EOF'
import json, statistics, sys
from pathlib import Path
records = [json.loads(line) for line in (Path(sys.argv[1]) / "history.jsonl").read_text().splitlines()]
train = [r for r in records if "train/samples_per_s" in r]
steady = train[1:] or train  # the first window holds compilation and the loaders' start
result = {
    "run": sys.argv[1], "logged_windows": len(train),
    "median_samples_per_s": statistics.median(r["train/samples_per_s"] for r in steady),
    "mean_data_wait_frac": statistics.fmean(r["train/data_wait_frac"] for r in steady),
    "max_data_wait_frac": max(r["train/data_wait_frac"] for r in steady),
    "final_metrics": json.loads((Path(sys.argv[1]) / "metrics.json").read_text()),
}
Path(sys.argv[2]).write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: v for k, v in result.items() if k != "final_metrics"}))
EOF
}

SHARDS=$OUT/shards
for name in $STAGES; do
  case $name in
    step)
      stage step $PY benchmarks/step_throughput.py $STEP_ARGS --out "$OUT/step_throughput_$SUFFIX.json" ;;
    loader)
      stage loader $PY benchmarks/loader_throughput.py $LOADER_ARGS --out "$OUT/loader_throughput_$SUFFIX.json" ;;
    train)
      [ -d "$SHARDS/train" ] || stage shards $PY -m ito_sweeps.cli make-shards "$SHARDS" --format jpg \
        --set data.image_size=$SIZE --set data.num_train=$TRAIN --set data.num_val=256 --set data.num_test=512
      for decode in $DECODES; do
        stage "train_${decode}_decode" $PY -m ito_sweeps.cli train --out "$OUT/train_${decode}_decode" \
          --set model.name=$MODEL --set objective.name=ito --set objective.alignment=views \
          --set objective.fusion_weight=2 --set fusion.depth=2 \
          --set data.dataset=webdataset --set data.train_data="$SHARDS/train" --set data.val_data="$SHARDS/val" \
          --set data.test_data="$SHARDS/test" --set data.image_size=$SIZE --set data.batch_size=$BATCH \
          --set data.num_workers=$LOADERS --set data.decode=$decode --set schedule.steps=$STEPS \
          --set schedule.warmup_steps=$((STEPS / 10)) --set eval.every=$STEPS --set eval.probe_train_size=256 \
          --set run.device=$DEVICE --set run.bf16=$BF16 --set run.log_every=$((STEPS / 5 > 1 ? STEPS / 5 : 1)) \
          && summarise "$OUT/train_${decode}_decode" "$OUT/train_${decode}_decode_$SUFFIX.json"
      done ;;
    sweep)
      cat >"$OUT/gpu_trials.yaml" <<EOF
description: Two trials on one worker (CLIP, ITO + fusion) from the stage-3 shards, for Ray's cost per trial.
search: grid
metric: val/heldout/i2t_r1
mode: max
scheduler: fifo
seeds: [0]
variants:
  - name: CLIP
    set: {objective.name: clip}
  - name: ITO + fusion
    set: {objective.name: ito, objective.alignment: views, objective.fusion_weight: 2, fusion.depth: 2}
max_failures: 0
config:
  model.name: $MODEL
  data.dataset: webdataset
  data.train_data: $SHARDS/train
  data.val_data: $SHARDS/val
  data.test_data: $SHARDS/test
  data.image_size: $SIZE
  data.batch_size: $((BATCH / 2))
  data.num_workers: $LOADERS
  schedule.steps: $((STEPS / 2))
  schedule.warmup_steps: $((STEPS / 20 > 0 ? STEPS / 20 : 1))
  eval.every: $((STEPS / 4 > 0 ? STEPS / 4 : 1))
  eval.probe_train_size: 256
  run.device: $DEVICE
  run.bf16: $BF16
resources: {num_workers: 1, cpus_per_worker: $((LOADERS + 1)), gpus_per_worker: $([ $DEVICE = cuda ] && echo 1 || echo 0)}
max_concurrent_trials: 1
EOF
      stage sweep $PY benchmarks/sweep_overhead.py --space "$OUT/gpu_trials.yaml" --out "$OUT/sweep_overhead_$SUFFIX.json" ;;
    *) echo "unknown stage $name (stages: step loader train sweep)" >&2; exit 2 ;;
  esac
done
echo "figures in $OUT:"; ls "$OUT"/*.json
