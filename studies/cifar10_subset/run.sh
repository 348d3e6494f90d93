#!/usr/bin/env bash
# The CIFAR-10 subset study (README "What it finds on real images"): about an hour on 2 CPU cores.
# Run from the repository root, with the 5,085 + 1,017-image subset at $DATA:
#   bash studies/cifar10_subset/run.sh
# Three sweeps (the main grid, a smaller teacher at small f, the full-data cell), then the study's tables
# and figures.
set -euo pipefail
DATA=${DATA:-npz:../shared/data/cifar10_subset.npz}
RUNS=${RUNS:-runs/cifar10_subset}
PYTHON=${PYTHON:-python}
# One recipe for teachers, scoring runs and students: 15 epochs and at least 200 steps of batch 64
# (a student at f = 0.1, 458 images, trains 25 epochs); 16 alphas per cell in cohorts of 8.
COMMON=(--dataset "$DATA" --student cnn3_w32 --epochs 15 --min-steps 200 --batch-size 64 --lr 0.05
        --trials-per-cell 16 --cohort-size 8 --storage "$RUNS")

# Main grid: random and EL2N, five fractions, clean labels and 30 % symmetric label noise,
# a teacher larger than the student (cnn3_w64, 4x the student's parameters).
"$PYTHON" -m sweep.run "${COMMON[@]}" --teacher cnn3_w64 --methods random el2n --fractions 0.1 0.2 0.3 0.5 0.7 \
    --label-noise 0 0.3 --name main
# Capacity: a teacher smaller than the student (cnn3_w16, a quarter of its parameters), random pruning,
# clean labels; compared with the main grid's cnn3_w64 cells at the same fractions.
"$PYTHON" -m sweep.run "${COMMON[@]}" --teacher cnn3_w16 --methods random --fractions 0.1 0.2 0.5 --name small-teacher

# The full-data reference cell (f = 1, method "full") at both noise levels, which anchors the alpha-f
# fits at f = 1; it reuses the main grid's teachers from the artifact cache.
"$PYTHON" -m sweep.run "${COMMON[@]}" --teacher cnn3_w64 --methods random --fractions 1.0 --label-noise 0 0.3 --name full-data

"$PYTHON" studies/cifar10_subset/analyse.py --runs "$RUNS" --out studies/cifar10_subset
