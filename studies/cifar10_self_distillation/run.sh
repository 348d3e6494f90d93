#!/usr/bin/env bash
# The self-distillation study (the paper's main setting) on the CIFAR-10 subset: about 6 h of students
# on 2 CPU cores, so it runs in parts. Run from the repository root, with the 5,085 + 1,017-image
# subset at $DATA:
#   bash studies/cifar10_self_distillation/run.sh            # every part, then the analysis
#   bash studies/cifar10_self_distillation/run.sh main       # one part: main, capacity, label-noise, analyse
# A part that was stopped (Ctrl-C, SIGTERM, a lost machine) continues where it stopped when run again:
# the script passes --resume once the part's experiment exists, with the same flags.
set -euo pipefail
DATA=${DATA:-npz:../shared/data/cifar10_subset.npz}
RUNS=${RUNS:-runs/cifar10_self_distillation}
PYTHON=${PYTHON:-python}
# MAX_CONCURRENT=1 leaves a core free on a 2-core laptop; it changes only the pace, not the students.
CONCURRENCY=(${MAX_CONCURRENT:+--max-concurrent "$MAX_CONCURRENT"})
# The first study's recipe (15 epochs and at least 200 steps of batch 64), three study replicates (each
# its own teacher, score tables and subsets), and 12 students per cell: the planner's number for >= 80 %
# power on every alpha-f direction at the first study's measured noise (README, "Before the compute").
COMMON=(--dataset "$DATA" --student cnn3_w32 --epochs 15 --min-steps 200 --batch-size 64 --lr 0.05
        --trials-per-cell 12 --cohort-size 6 --alpha-design grid --replicates 0 1 2 --storage "$RUNS")

sweep() {  # sweep NAME FLAGS...: start the part, or continue it when it exists
    local name=$1; shift
    local again=()
    [ -f "$RUNS/$name/sweep.json" ] && again=(--resume)
    "$PYTHON" -m sweep.run "${COMMON[@]}" "$@" --name "$name" "${again[@]}" "${CONCURRENCY[@]}"
}

main() {  # claims 1-3: teacher = student, random and two score-based methods, f 0.1-0.7 and the full cell
    sweep main --teacher cnn3_w32 --methods random el2n grand --fractions 0.1 0.2 0.3 0.5 0.7 1.0
}
capacity() {  # claim 4: teachers a quarter and 4x the student's size; the equal teacher's cells are main's
    sweep capacity --teacher cnn3_w16 cnn3_w64 --methods random --fractions 0.1 0.7
}
label_noise() {  # the mechanism: 30 % symmetric label noise; its P = 0 cells are main's
    sweep label-noise --teacher cnn3_w32 --methods random el2n --fractions 0.1 0.3 0.7 1.0 --label-noise 0.3
}
analyse() {
    "$PYTHON" studies/cifar10_self_distillation/analyse.py --runs "$RUNS" --out studies/cifar10_self_distillation
}

case "${1:-all}" in
    main) main ;;
    capacity) capacity ;;
    label-noise) label_noise ;;
    analyse) analyse ;;
    all) main; capacity; label_noise; analyse ;;
    *) echo "unknown part ${1}: main, capacity, label-noise, analyse or nothing (all)" >&2; exit 2 ;;
esac
