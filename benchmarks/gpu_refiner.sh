#!/usr/bin/env bash
# One GPU lease, one command (issue 20): train the refiner of pretrained/'s autoencoder on whole 32-px
# images with large batches for TRAIN_SECONDS, export the run in fp16 and put it under $OUT. The FID
# Inception file does not travel to the GPU machine, so scoring happens back on the CPU machine:
#     catdog evaluate --run-dir <OUT>/export --n 10000 --ref-stats ../shared/fid_stats
#
#   OUT=/tmp/out bash benchmarks/gpu_refiner.sh                    # on the GPU machine, repo root
#   DEVICE=cpu BATCH=8 CROP=16 WIDTHS=8,16,16 PROBE=20 PROBE_TIMEOUT=600 TRAIN_TIMEOUT=600 TRAIN_SECONDS=5 STEP_UNIT=10 \
#       OUT=/tmp/out bash benchmarks/gpu_refiner.sh                # a dry run of the script on a CPU
#
# The step count is chosen from a probe (PROBE steps of the same run) so that training fits
# TRAIN_SECONDS; the run checkpoints every 2,000 steps, so a rerun of step 2 resumes.
# WIDTHS 64,128,128 keeps pretrained/ under ~20 MB in fp16 (2.1 M parameters, 4.2 MB).
# DECODER_STEPS > 0 first fine-tunes pretrained/'s decoder that many steps (the decoder stage, batch 64;
# pretrained/'s decoder is already the session-12 fine-tune, so 0 by default).
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
OUT=${OUT:-/tmp/gpu_refiner}; DEVICE=${DEVICE:-cuda}; WIDTHS=${WIDTHS:-64,128,128}; BATCH=${BATCH:-256}
CROP=${CROP:-32}; LR=${LR:-1e-3}; PROBE=${PROBE:-300}; PROBE_TIMEOUT=${PROBE_TIMEOUT:-180}
TRAIN_SECONDS=${TRAIN_SECONDS:-420}; TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-$((TRAIN_SECONDS * 3 / 2 + 120))}
STEP_UNIT=${STEP_UNIT:-1000}; DECODER_STEPS=${DECODER_STEPS:-0}; PY=${PY:-python3}; W=/tmp/catdog_refiner; rm -rf "$W"; mkdir -p "$W" "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null) device $DEVICE widths $WIDTHS"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
flags="--device $DEVICE --refiner-widths $WIDTHS --refiner-batch-size $BATCH --refiner-crop-px $CROP --refiner-lr $LR"

# 1. speed probe: PROBE steps of the same refiner
timeout "$PROBE_TIMEOUT" $PY benchmarks/refine_pretrained.py --run-dir "$W/probe" $flags --refiner-train-steps "$PROBE" \
    --refiner-warmup-steps 10 --log-every-steps $((PROBE / 2)) > "$W/probe.log" 2>&1
STEPS=$($PY - "$W/probe/metrics.jsonl" "$BATCH" "$TRAIN_SECONDS" "$STEP_UNIT" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
steps_per_s = rows[-1]["samples_per_s"] / int(sys.argv[2])
unit = int(sys.argv[4])
print(f"probe: {steps_per_s:.1f} steps/s", file=sys.stderr)
print(max(unit, int(steps_per_s * float(sys.argv[3]) // unit * unit)))
EOF
) || { echo "probe failed:"; tail -n 20 "$W/probe.log"; exit 1; }
echo "steps: $STEPS"

# 2. the refiner (EMA half-life 1/20 of the run, warm-up 1/40)
s=$SECONDS
timeout "$TRAIN_TIMEOUT" $PY benchmarks/refine_pretrained.py --run-dir "$W/run" $flags --decoder-train-steps "$DECODER_STEPS" \
    --refiner-train-steps "$STEPS" --refiner-ema-halflife-steps $((STEPS / 20 + 1)) \
    --refiner-warmup-steps $((STEPS / 40 + 1)) --checkpoint-every-steps 2000 \
    --log-every-steps $((STEPS / 20 + 1)) > "$W/run.log" 2>&1
echo "train: exit $?, $((SECONDS - s)) s"; grep -E "trained in" "$W/run.log" \
    || echo "no refiner.safetensors (timed out? rerunning this step resumes from its checkpoint)"

# 3. bring back the fp16 export (weights, config, metrics) and the logs
$PY -m catdog export --run-dir "$W/run" --out "$W/export" && tar -cf "$OUT/export.tar" -C "$W" export
cp "$W/probe.log" "$W/run.log" "$OUT/"
ls -l "$OUT"; echo "== done after $SECONDS s"
