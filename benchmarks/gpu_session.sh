#!/usr/bin/env bash
# One GPU lease, one command: measure the gpu preset's training speed on this card, then train two
# variants side by side (plain; + adaptive PatchGAN from half-way), each the whole `catdog run`
# (autoencoder, diffusion, figures), export both in fp16 and put everything under $OUT.
# Sampling and scoring (FID needs the 87 MB Inception file) happen afterwards on any machine:
#     catdog evaluate --run-dir <export> --n 10000 --ref-stats ../shared/fid_stats
#
#   OUT=/tmp/out bash benchmarks/gpu_session.sh          # on the GPU machine, from the repo root
#   PRESET=tiny PROBE_AE=40 PROBE_DIF=40 AE_SECONDS=4 DIF_SECONDS=4 STEP_UNIT=10 \
#       OUT=/tmp/out bash benchmarks/gpu_session.sh      # a dry run of the script on a CPU
#
# Run on the H100 of 2026-11-26 with the code of commit c84bbcc (the gpu preset then: eager, batches 128 / 512):
# it trained the shipped pretrained/ (the `gan` variant); see pretrained/README.md.
# Step counts: the same for both variants, chosen from the probed rates (both variants probed at
# once, as they then run) so that the slower (GAN) variant's autoencoder fits AE_SECONDS and its
# diffusion DIF_SECONDS. Rounded down to STEP_UNIT.
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
OUT=${OUT:-/tmp/gpu_session}; PRESET=${PRESET:-gpu}; ADV=${ADV:-0.8}
AE_SECONDS=${AE_SECONDS:-230}; DIF_SECONDS=${DIF_SECONDS:-110}; STEP_UNIT=${STEP_UNIT:-1000}
PROBE_AE=${PROBE_AE:-400}; PROBE_DIF=${PROBE_DIF:-600}; RUN_TIMEOUT=${RUN_TIMEOUT:-420}
PY=${PY:-python3}; W=/tmp/catdog_session; rm -rf "$W"; mkdir -p "$W" "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null) preset $PRESET adv $ADV"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
now() { date +%s.%N; }

# 1. speed probe (short runs of the real pipeline, both variants at once)
start=$(now)
for v in plain gan; do
    extra=""; [ $v = gan ] && extra="--adv-weight $ADV --adv-start-step 0"
    timeout 90 $PY -m catdog train-diffusion --preset "$PRESET" --run-dir "$W/probe_$v" \
        --ae-train-steps "$PROBE_AE" --diffusion-train-steps "$PROBE_DIF" \
        --log-every-steps $((PROBE_AE / 4)) $extra > "$W/probe_$v.log" 2>&1 &
    pids="${pids:-} $!"
done
wait $pids                                   # (a bare `wait` would also wait for the tee below)
echo "probe: $($PY -c "print(round($(now) - $start, 1))") s"
read -r AE_STEPS DIF_STEPS < <($PY - "$W" "$AE_SECONDS" "$DIF_SECONDS" "$STEP_UNIT" <<'EOF'
import json, sys
w, ae_s, dif_s, unit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rate = {}
for v in ("plain", "gan"):
    rows = [json.loads(l) for l in open(f"{w}/probe_{v}/metrics.jsonl")]
    cfg = json.load(open(f"{w}/probe_{v}/config.json"))
    for stage, batch in (("autoencoder", cfg["ae"]["ae_batch_size"]),
                         ("diffusion", cfg["diffusion"]["diffusion_batch_size"])):
        rate[v, stage] = [r for r in rows if r["stage"] == stage][-1]["samples_per_s"] / batch
print({f"{v}/{s}": round(r, 1) for (v, s), r in rate.items()}, "steps/s", file=sys.stderr)
ae = ae_s / (0.5 / rate["plain", "autoencoder"] + 0.5 / rate["gan", "autoencoder"])
dif = dif_s * min(rate["plain", "diffusion"], rate["gan", "diffusion"])
print(max(unit, int(ae // unit * unit)), max(unit, int(dif // unit * unit)))
EOF
)
[ -n "${DIF_STEPS:-}" ] || { echo "probe failed:"; tail -n 20 "$W"/probe_*.log; AE_STEPS=8000; DIF_STEPS=10000; }
echo "steps: autoencoder $AE_STEPS, diffusion $DIF_STEPS (adversarial from $((AE_STEPS / 2)))"

# 2. the two variants, each a whole `catdog run`, side by side
for v in plain gan; do
    extra=""; [ $v = gan ] && extra="--adv-weight $ADV --adv-start-step $((AE_STEPS / 2))"
    (s=$(now); timeout "$RUN_TIMEOUT" $PY main.py --preset "$PRESET" --run-dir "$W/$v" \
        --ae-train-steps "$AE_STEPS" --diffusion-train-steps "$DIF_STEPS" $extra > "$W/$v.log" 2>&1
     rc=$?; echo "run $v: exit $rc, wall $($PY -c "print(round($(now) - $s, 1))") s"
     grep -E "trained in|resuming" "$W/$v.log") &
    runs="${runs:-} $!"
done
wait $runs

# 3. bring back: fp16 export (weights, config, metrics) and figures + logs, one tar each
for v in plain gan; do
    if $PY -m catdog export --run-dir "$W/$v" --out "$W/export_$v" > /dev/null; then
        tar -cf "$OUT/$v.tar" -C "$W" "export_$v"
    elif [ -f "$W/$v/autoencoder.safetensors" ]; then                # the autoencoder at least
        tar -cf "$OUT/$v.tar" -C "$W" "$v/autoencoder.safetensors"
    fi
    tar -cf "$OUT/${v}_files.tar" -C "$W" "$v.log" "probe_$v.log" "$v/metrics.jsonl" "$v/config.json" \
        $(cd "$W" && ls -d "$v/figures" 2>/dev/null)
done
ls -l "$OUT"

# 4. if time is left (SECONDS counts from the start): the speed benchmark of the preset, alone
left=$(( ${BENCH_UNTIL:-540} - SECONDS ))
[ "$left" -gt 30 ] && timeout "$left" $PY benchmarks/bench_speed.py --preset "$PRESET" --repeats 3
echo "== done after $SECONDS s"
