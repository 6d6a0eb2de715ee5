#!/usr/bin/env bash
# Sampling ablations of a run's latent prior at one N: each line of VARIANTS is a set of `catdog evaluate`
# sampling flags; each result goes to OUT/<name>.json. The decoding floor's features are cached after
# the first call (the decoder and refiner repeat their images), so each further variant costs its samples.
#   bash benchmarks/ablate_sampling.sh runs/pre_copy runs/ablate_sampling 2000 --no-refiner
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?run folder}; OUT=${2:?output folder}; N=${3:-2000}; shift 3 || true
mkdir -p "$OUT"
while read -r name flags; do
    [ -z "$name" ] || [ "${name#\#}" != "$name" ] && continue
    [ -f "$OUT/$name.json" ] && { echo "$name: done already"; continue; }
    echo "== $name: $flags"
    # shellcheck disable=SC2086
    .venv/bin/catdog evaluate --run-dir "$RUN" --n "$N" --ref-stats ../shared/fid_stats "$@" $flags \
        --out "$OUT/$name.json" | grep -E "^(fid|floor_fid|prior_gap|kid|precision|recall|class_fidelity) "
done <<'VARIANTS'
ddim50_g6
ddim50_g6_eta1            --eta 1
ddim50_g6_interval0.5_10  --guidance-interval 0.5,10
ddim50_g9_interval0.5_10  --guidance-interval 0.5,10 --guidance 9
ddim50_g3                 --guidance 3
ddim200_g6                --steps 200
ddpm_g6                   --sampler ddpm
VARIANTS
