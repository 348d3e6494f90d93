"""The planner's power (analysis.power): simulated sweeps of the planned design, analysed by the real
analysis, find the answers more often the more informative the sweep."""

from analysis.power import PlannedDesign, plan_power

DESIGN = PlannedDesign(methods=("random", "el2n"), fractions=(0.1, 0.3, 0.7), full=True, trials_per_cell=8,
                       alpha_design="grid")


def test_the_planned_power_follows_the_signal_to_noise_and_names_every_question():
    clear = {q.question: q for q in plan_power(DESIGN, noise_scale=0.2, sweeps=10, jobs=2)}
    noisy = {q.question: q for q in plan_power(DESIGN, noise_scale=5.0, sweeps=10, jobs=2)}
    assert set(clear) == set(noisy) == {
        "KD gain at f = 0.1", "KD gain at f = 0.3", "KD gain at f = 0.7", "KD gain at f = 1",
        "random ahead of el2n at f = 0.1", "alpha*(f) falls with f: random", "alpha*(f) falls with f: el2n",
        "alpha*(f) falls with f: pooled over the methods"}
    # the simulator's inverse truth, found at a fifth of the default noise, hardly at five times it
    for question in ("KD gain at f = 0.1", "alpha*(f) falls with f: random", "alpha*(f) falls with f: pooled over the methods"):
        assert clear[question].power >= 0.8 and noisy[question].power <= 0.4, (question, clear[question], noisy[question])
    assert all(q.sweeps == 10 and 0 < q.standard_error < 0.2 for q in clear.values())
    assert {q.kind for q in clear.values() if q.question.startswith("alpha*(f)")} == {"alpha-f direction"}
    # each direction carries the most any 5 % test could have (analysis.power.direction_bounds), which the
    # real analysis stays under; the other questions have none
    for question in noisy.values():
        if question.kind == "alpha-f direction":
            assert 0.05 < question.bound < 0.9 and question.power <= question.bound + 3 * question.standard_error
            # and what the report's own procedure could reach knowing the truth (two-sided, Hommel's procedure
            # among the methods): less
            assert 0 < question.procedure_bound < question.bound
            assert question.power <= question.procedure_bound + 3 * question.standard_error
        else:
            assert question.bound != question.bound and question.procedure_bound != question.procedure_bound  # nan


def test_the_target_power_is_reached_with_the_fewest_students_on_the_ladder_or_refused():
    from analysis.power import DIRECTION, LADDER, students_for_power

    found = students_for_power(DESIGN, target=0.8, max_trials=16, noise_scale=0.3, sweeps=10, jobs=2)
    assert found.trials_per_cell in LADDER and found.trials_per_cell <= 16
    direction = [q.power for q in found.powers if q.kind == DIRECTION]
    assert len(direction) == 3 and min(direction) == found.tried[found.trials_per_cell] >= 0.8
    fewer = [n for n in found.tried if n < found.trials_per_cell]
    assert all(found.tried[n] < 0.8 for n in fewer)  # every smaller number tried fell short
    refused = students_for_power(DESIGN, target=0.8, max_trials=4, noise_scale=5.0, sweeps=10, jobs=2)
    assert refused.trials_per_cell is None and refused.tried[4] < 0.8


def test_the_planned_wall_time_counts_the_cohorts_that_run_alone_at_the_end():
    from sweep.planner import makespan

    assert makespan([3.0, 3.0, 3.0], slots=2) == 6.0  # the third cohort runs alone
    assert makespan([4.0, 1.0, 1.0, 1.0, 1.0], slots=2) == 4.0  # the short ones fill the other slot
    assert makespan([2.0] * 4, slots=8) == 2.0


def test_the_power_bound_is_the_level_at_every_no_relation_truth_and_grows_with_the_evidence():
    """``direction_bounds``: the Neyman-Pearson power at the nearest no-relation truth. At a no-relation
    truth (the flat one, alpha* = 1 everywhere, and each nearest null of ``analysis.simulate``, whose
    shape changes with f) the nearest null is itself, so the bound is the level; it grows with the
    students per cell and with the size of the fall."""
    from dataclasses import replace

    from analysis.power import direction_bounds
    from analysis.simulate import NEAREST

    design = replace(DESIGN, trials_per_cell=16)
    for truth in ("none", "edge_null", *NEAREST):
        bounds = direction_bounds(design, noise_scale=0.5, truth=truth)
        assert set(bounds) == {"random", "el2n", "pooled"}
        assert all(abs(b - 0.05) < 1e-3 for b in bounds.values()), (truth, bounds)
    shallow = direction_bounds(design, noise_scale=0.5, truth="edge_shallow")
    steep = direction_bounds(design, noise_scale=0.5, truth="edge_steep")
    more = direction_bounds(replace(design, trials_per_cell=48), noise_scale=0.5, truth="edge_shallow")
    for group in ("random", "el2n", "pooled"):
        assert 0.05 < shallow[group] < steep[group] and shallow[group] < more[group]
    assert shallow["random"] < shallow["pooled"]  # the pooled fit reads every method's cells


def test_the_procedure_bound_is_the_reports_procedure_with_the_truth_known():
    """``procedure_bounds``: each fit's Neyman-Pearson statistic (normal, mean its distance, sd 1, the
    fits' correlated) put through the report's procedure: two-sided tests, the pooled direction first at
    5 %, the methods only after it, with Hommel's procedure among them. Checked against the procedure's rates written out by
    hand, and the correlations against the trials the fits share."""
    import numpy as np
    from scipy import stats

    from analysis.power import PROCEDURE_DRAWS, DirectionEvidence, direction_evidence, procedure_bounds

    def evidence(correlation=0.0, **distance):
        names = tuple(distance)
        shared = np.full((len(names), len(names)), correlation)
        np.fill_diagonal(shared, 1.0)
        return DirectionEvidence(names, np.array(list(distance.values()), float), shared)

    def side(d, level):  # P(two-sided p <= level and the true sign), one statistic of mean d
        return stats.norm.sf(stats.norm.isf(level / 2) - d)

    def either(d, level):  # P(two-sided p <= level), either sign
        return side(d, level) + stats.norm.cdf(-stats.norm.isf(level / 2) - d)

    mc = 4 * (0.25 / PROCEDURE_DRAWS) ** 0.5  # four Monte Carlo standard errors at the default draws
    # one method and no pooled fit: a two-sided 5 % test
    assert abs(procedure_bounds(evidence(a=2.0))["a"] - side(2.0, 0.05)) < mc
    # two methods after a pooled direction always found: Hommel's procedure (Hochberg's, with two), a at
    # 2.5 %, or at 5 % when b's p is at most 5 % too
    rates = procedure_bounds(evidence(a=2.0, b=1.0, pooled=50.0))
    assert abs(rates["a"] - (side(2.0, 0.025) + (side(2.0, 0.05) - side(2.0, 0.025)) * either(1.0, 0.05))) < mc
    assert abs(rates["b"] - (side(1.0, 0.025) + (side(1.0, 0.05) - side(1.0, 0.025)) * either(2.0, 0.05))) < mc
    assert rates["pooled"] == 1.0
    # over three replicates the test is a t on 2 degrees of freedom: its statistic a noncentral t
    replicated = DirectionEvidence(("a",), np.array([3.0]), np.eye(1), replicates=3)
    assert abs(procedure_bounds(replicated)["a"] - stats.nct.sf(stats.t.isf(0.025, 2), 2, 3.0)) < mc
    # three methods whose statistics are one: all found together once their common p is at most 5 %
    # (Holm's procedure would have asked for 5 % / 3)
    rates = procedure_bounds(evidence(1.0, a=2.5, b=2.5, c=2.5, pooled=50.0))
    assert all(abs(rates[m] - side(2.5, 0.05)) < mc for m in "abc")
    # with no relation in the pooled fit the methods wait for its false finding: the level holds
    rates = procedure_bounds(evidence(a=0.0, b=0.0, pooled=0.0))
    assert abs(rates["pooled"] - 0.025) < mc and all(rates[m] < 0.025 for m in "ab")
    # the pooled gate costs the methods power where the pooled fit has less evidence than they do
    weak, strong = (procedure_bounds(evidence(a=3.0, b=3.0, pooled=d))["a"] for d in (1.0, 6.0))
    assert weak < strong
    # a design's: every method's statistic reads the shared f = 1 cell, so the methods' correlate, more
    # where the f = 1 cell tells the truth from its null most (the fall from the edge ends there)
    design = PlannedDesign(methods=("random", "el2n"), fractions=(0.1, 0.3, 0.7), full=True, trials_per_cell=16,
                           alpha_design="grid")
    inverse, steep = (direction_evidence(design, noise_scale=0.5, truth=t) for t in ("inverse", "edge_steep"))
    for found in (inverse, steep):
        assert found.names == ("random", "el2n", "pooled")
        assert np.allclose(np.diag(found.correlation), 1) and np.all(np.linalg.eigvalsh(found.correlation) > -1e-9)
        assert 0 < found.correlation[0, 1] < found.correlation[0, 2] < 1  # the pooled fit reads each method's cells
    assert inverse.correlation[0, 1] < steep.correlation[0, 1]


def test_a_worker_that_dies_leaves_the_power_to_this_process(monkeypatch):
    """The simulations run in forked worker processes; one that dies (a fork of a process with threads
    can) breaks the pool, and the planner then runs them here: the same powers as on one process."""
    import os

    from analysis import power

    design = PlannedDesign(methods=("random", "el2n"), fractions=(0.1, 0.3), full=True, trials_per_cell=4,
                           alpha_design="grid")
    alone = power.plan_power(design, noise_scale=3.0, sweeps=10)
    here, real = os.getpid(), power._outcomes

    def dies_in_a_worker(task):
        if os.getpid() != here:  # the forked worker resolves _outcomes to this, as the test left the module
            os._exit(1)
        return real(task)

    dies_in_a_worker.__module__, dies_in_a_worker.__qualname__ = power.__name__, "_outcomes"  # pickled by that name
    monkeypatch.setattr(power, "_outcomes", dies_in_a_worker)
    assert list(map(repr, power.plan_power(design, noise_scale=3.0, sweeps=10, jobs=2))) == list(map(repr, alone))  # nan bounds
