"""Before any compute: what a sweep will cost and what its report can answer (``--dry-run`` prints it,
every sweep starts with it).

- The compute: students, optimisation steps (each student's, and each cohort's: the members of a
  cohort step together), and, with an earlier experiment's measured pace (``--noise-from``: busy
  seconds per student step), the busy time and the wall time on the sweep's trial slots.
- The power of every question of the report (``analysis.power``) at the planned design and a noise
  level: the simulator's default, or the signal to noise measured on the earlier experiment
  (``analysis.simulate.matched_noise_scale``), said which.
"""

from __future__ import annotations

import heapq
import math
import os
from dataclasses import dataclass

from analysis.power import (MINIMUM_SWEEPS, TRUTHS, PlannedDesign, Target, measured_noise, measured_pace, plan_power,
                            students_for_power)
from contract import FULL
from sweep.plan import SweepPlan

DEFAULT_PLAN_SWEEPS = 40  # in --dry-run; a sweep itself only with --plan-sweeps


def planned_cohorts(plan: SweepPlan, train_size: int) -> list[tuple[int, int]]:
    """Every cohort as (members, steps), in the order the searcher hands them out (round-robin over the
    cells: every cell's first cohort, then every cell's second, ...). A cell's subset keeps round(f x
    train) images (``trainables.selection``) and trains ``recipe.epochs_for`` its steps per epoch (the
    loader's ceil(n / batch)); its students run in cohorts of ``plan.cohort_size`` that step together."""
    per_cell = []
    for cell in plan.cells:
        kept = max(1, int(round(cell.fraction * train_size)))
        per_epoch = math.ceil(kept / plan.recipe.batch_size)
        steps = plan.recipe.epochs_for(per_epoch) * per_epoch
        full, rest = divmod(plan.trials_per_cell, plan.cohort_size)
        per_cell.append([(plan.cohort_size, steps)] * full + ([(rest, steps)] if rest else []))
    return [cohorts[k] for k in range(max(map(len, per_cell), default=0)) for cohorts in per_cell if k < len(cohorts)]


def makespan(durations: list[float], slots: int) -> float:
    """When the last cohort ends, each started on the first free slot in the given order: the wall time,
    tail included (a last cohort running alone while the other slots idle)."""
    free = [0.0] * slots
    for duration in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + duration)
    return max(free)


def trial_slots(plan: SweepPlan, address: str | None) -> int | None:
    """How many cohorts run at once: ``--max-concurrent``, else on the embedded local Ray the CPUs
    over ``--cpus-per-cohort``; on a cluster not known before it is reached (None)."""
    config = plan.config
    if config.max_concurrent:
        return int(config.max_concurrent)
    if address:
        return None
    return max(1, int((os.cpu_count() or 1) // max(config.cpus_per_trial or 1.0, 1e-9)))


def _hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class NoiseLevel:
    """The noise the power is planned at, and the earlier experiment it was measured on (if any)."""

    scale: float  # the simulator's noise scale
    text: str  # where it comes from, for the console
    trials: object = None  # the earlier experiment's tidy trials (its pace), or None
    source: str | None = None


DEFAULT_NOISE = NoiseLevel(1.0, "the simulator's default noise scale 1 (validation sd 1.5 points between trials; not "
                                "measured for this dataset: --noise-from an earlier experiment measures it)")


def noise_level(noise_from: str | None, label_noise: float) -> NoiseLevel:
    """The noise level of ``--noise-from`` (``analysis.power.measured_noise``), or the default. Raises
    ValueError on an unreadable experiment."""
    if not noise_from:
        return DEFAULT_NOISE
    try:
        trials, matched, where = measured_noise(noise_from, label_noise)
    except (ValueError, OSError) as error:  # a ResultsError is a ValueError
        raise ValueError(f"--noise-from: {error}") from None
    if isinstance(matched, ValueError):
        return NoiseLevel(DEFAULT_NOISE.scale, f"{DEFAULT_NOISE.text} (--noise-from {noise_from}: {matched})", trials, noise_from)
    return NoiseLevel(matched.scale, f"measured on {noise_from} ({where}): {matched.describe()}", trials, noise_from)


def design_of(plan: SweepPlan) -> PlannedDesign:
    return PlannedDesign(
        methods=tuple(m for m in plan.methods if m != FULL), fractions=tuple(f for f in plan.fractions if f < 1.0),
        full=1.0 in plan.fractions, trials_per_cell=plan.trials_per_cell, alpha_design=plan.config.alpha_design,
        replicates=len(plan.config.replicates), label_noise=tuple(plan.label_noise))


def choose_trials(plan: SweepPlan, noise: NoiseLevel, target: float, max_trials: int, sweeps: int,
                  truth: str = "inverse") -> Target:
    """``--target-power``: the fewest students per cell at which every alpha-f direction question reaches ``target``."""
    if not 0 < target < 1:
        raise ValueError(f"--target-power must be between 0 and 1, got {target:g}")
    if max_trials < 2:
        raise ValueError(f"--max-trials must be >= 2, got {max_trials}")
    if sweeps < MINIMUM_SWEEPS:
        raise ValueError(f"--target-power needs --plan-sweeps >= {MINIMUM_SWEEPS}, got {sweeps}")
    return students_for_power(design_of(plan), target, max_trials, noise.scale, sweeps, jobs=min(2, os.cpu_count() or 1),
                              truth=truth)


def plan_lines(plan: SweepPlan, train_size: int, noise: NoiseLevel, plan_sweeps: int, address: str | None = None,
               target: Target | None = None, truth: str = "inverse") -> list[str]:
    """The planner's lines (``plan_sweeps``: simulated sweeps for the power, 0 for none; ``target``: what
    ``--target-power`` chose, whose powers are then the ones printed)."""
    cohorts = planned_cohorts(plan, train_size)
    students, cohort_steps = sum(m * steps for m, steps in cohorts), sum(steps for _, steps in cohorts)
    lines = [f"compute: {plan.num_trials} students, {students:,} optimisation steps "
             f"({cohort_steps:,} steps of cohorts of up to {plan.cohort_size})"
             + (f" at the first look; at most {plan.most_trials} students, {students * plan.most_trials // plan.num_trials:,} "
                "steps, when every round runs to --max-trials" if plan.sequential else "")]
    if noise.trials is not None:
        try:
            pace = measured_pace(noise.trials, noise.source)
            slots = trial_slots(plan, address)
            busy = students * pace.seconds_per_step
            range_text = f"{_hours(students * pace.low)}-{_hours(students * pace.high)}"
            durations = [members * steps * pace.seconds_per_step for members, steps in cohorts]
            wall = (f", about {_hours(makespan(durations, slots))} of wall time on {slots} trial slot{'s' * (slots > 1)}" if slots
                    else "; the wall time is that over the cluster's trial slots")
            lines.append(f"time: {_hours(busy)} of the students' busy time (quartiles {range_text}){wall}, at the pace "
                         f"of {pace.describe()}; teachers and scores before them")
            if pace.student_arch not in plan.students:
                lines.append("  (that pace was measured with another student: a rough guide)")
        except ValueError as error:
            lines.append(f"time: not estimated ({error})")
    else:
        lines.append("time: not estimated (no measured pace: --noise-from an earlier experiment of this recipe gives one)")
    if target is not None:
        tried = ", ".join(f"{n}: {100 * p:.0f}%" for n, p in sorted(target.tried.items()))
        lines.append(f"students per cell: {plan.trials_per_cell}, the fewest at which every alpha-f direction question "
                     f"has the target power (the weakest one's power at each number tried: {tried})")
        powers = target.powers
    elif plan_sweeps <= 0:
        lines.append("power: not estimated (--dry-run prints it, or --plan-sweeps N)")
        return lines
    elif not design_of(plan).methods or not design_of(plan).fractions:
        lines.append("power: nothing to plan (no pruned cells)")
        return lines
    else:
        sequential = (plan.sequential, plan.question_kinds) if plan.sequential else None
        powers = plan_power(design_of(plan), noise.scale, plan_sweeps, jobs=min(2, os.cpu_count() or 1), truth=truth,
                            sequential=sequential)
    sweeps = powers[0].sweeps if powers else plan_sweeps
    how = "sequential design, its looks' decisions" if plan.sequential and target is None else "design"
    lines.append(f"power when {TRUTHS[truth]} (the simulator's truth {truth!r}; {sweeps} simulated sweeps of this "
                 f"{how}; noise: {noise.text}):")
    if not powers:
        lines.append(f"  none of the report's questions: {plan.trials_per_cell} students per cell are too few to "
                     "estimate a KD gain or the noise")
    for question in powers:
        when = (f" (decided at {question.students:.0f} students on average)"
                if plan.sequential and target is None and math.isfinite(question.students) else "")
        # what the report's procedure could reach knowing the truth and the noise, and any 5 % test
        bound = (f" (with the truth known: the report's test {100 * question.procedure_bound:.0f}%, "
                 f"any 5 % test {100 * question.bound:.0f}%)"
                 if math.isfinite(question.procedure_bound) and question.procedure_bound < 0.995 else "")
        lines.append(f"  {100 * question.power:3.0f}% ± {100 * question.standard_error:.0f}  {question.question}{when}{bound}")
    if plan.sequential and target is None and powers:
        lines.append(f"  students trained: {powers[0].sweep_students:.0f} on average, of at most {plan.most_trials} "
                     f"({100 * powers[0].sweep_students / plan.most_trials:.0f} %): the sweep stops when its "
                     f"{', '.join(plan.question_kinds)} questions are decided")
    caveats = []
    if len(plan.teachers) > 1 or len(plan.students) > 1:
        caveats.append("one teacher and student simulated")
    if plan.config.halving:
        caveats.append("without halving")
    if len(plan.config.replicates) > 1:
        caveats.append("replicates without a replicate-level effect: an upper bound for replicate-level findings")
    if caveats:
        lines.append(f"  ({'; '.join(caveats)})")
    return lines
