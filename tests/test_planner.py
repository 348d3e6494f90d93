"""The planner's power (analysis.power): simulated sweeps of the planned design, analysed by the real
analysis, find the answers more often the more informative the sweep."""

from analysis.power import PlannedDesign, plan_power

DESIGN = PlannedDesign(methods=("random", "el2n"), fractions=(0.1, 0.3, 0.7), full=True, trials_per_cell=8,
                       alpha_design="grid")


def test_the_planned_power_follows_the_signal_to_noise_and_names_every_question():
    clear = {q.question: q for q in plan_power(DESIGN, noise_scale=0.2, sweeps=10)}
    noisy = {q.question: q for q in plan_power(DESIGN, noise_scale=5.0, sweeps=10)}
    assert set(clear) == set(noisy) == {
        "KD gain at f = 0.1", "KD gain at f = 0.3", "KD gain at f = 0.7", "KD gain at f = 1",
        "random ahead of el2n at f = 0.1", "alpha*(f) falls with f: random", "alpha*(f) falls with f: el2n",
        "alpha*(f) falls with f: pooled over the methods"}
    # the simulator's inverse truth, found at a fifth of the default noise, hardly at five times it
    for question in ("KD gain at f = 0.1", "alpha*(f) falls with f: random", "alpha*(f) falls with f: pooled over the methods"):
        assert clear[question].power >= 0.8 and noisy[question].power <= 0.4, (question, clear[question], noisy[question])
    assert all(q.sweeps == 10 and 0 < q.standard_error < 0.2 for q in clear.values())
