"""From a sweep's results to its answer: the optimal alpha of every cell, the alpha-f relation, a report.

    from analysis.report import analyse
    result = analyse("runs/NAME")                        # or "s3://bucket/runs/NAME"
    result.cells                                         # one row per cell: optimum, interval, KD gain
    [fit.predict(0.15) for fit in result.fits]           # recommended alpha at a new f

Commands: ``python -m analysis.report EXPERIMENT`` (HTML report and its tables) and
``python -m analysis.predict EXPERIMENT --f 0.15`` (the recommended alpha).

Modules: ``results`` (the tidy trials table), ``optimum`` (per-cell optimum with bootstrap intervals),
``alpha_f`` (candidate families, selection, monotonicity test, prediction), ``figures`` and ``report``
(``analyse``, ``build_report``; kept out of this namespace so that ``python -m analysis.report`` runs clean).
"""

from analysis.alpha_f import FAMILIES, AlphaFFit, fit_alpha_f, list_families
from analysis.optimum import CellOptima, cell_optima
from analysis.results import Experiment, ResultsError, load_experiment, tidy

__all__ = [
    "FAMILIES", "AlphaFFit", "CellOptima", "Experiment", "ResultsError", "cell_optima", "fit_alpha_f", "list_families", "load_experiment", "tidy",
]
