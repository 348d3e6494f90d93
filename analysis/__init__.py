"""From a sweep's results to its answer: the optimal alpha at every f, KD gains, the alpha-f relation, a report.

    from analysis.report import analyse
    result = analyse("runs/NAME")                        # or "s3://bucket/runs/NAME"
    result.cells                                         # one row per cell: alpha*, intervals, KD gain
    [fit.predict(0.15) for fit in result.fits]           # recommended alpha at a new f (a model prediction)

Commands: ``python -m analysis.report EXPERIMENT`` (HTML report and its tables) and
``python -m analysis.predict EXPERIMENT --f 0.15`` (the recommended alpha).

Modules: ``results`` (the tidy trials table), ``pooled`` (the pooled model of alpha*(f), Holm's and
the graphical multiple-testing procedures, with Bonferroni or Simes tests), ``alpha_f`` (one pooled fit per method, the direction
test with family-wise error control), ``optimum`` (per cell: measurements, the cell-alone diagnostic, KD gain with its interval),
``simulate`` (sweeps simulated from a known truth, for ``bench/bench_calibration.py`` and the tests),
``workers`` (the calibrations' simulated sweeps fitted in worker processes),
``figures`` and ``report`` (``analyse``, ``build_report``; kept out of this namespace so that
``python -m analysis.report`` runs clean).
"""

from analysis.alpha_f import AlphaFFit, fit_alpha_f
from analysis.optimum import CellOptima, cell_optima
from analysis.pooled import holm
from analysis.results import Experiment, ResultsError, load_experiment, tidy

__all__ = [
    "AlphaFFit", "CellOptima", "Experiment", "ResultsError", "cell_optima", "fit_alpha_f", "holm", "load_experiment", "tidy",
]
