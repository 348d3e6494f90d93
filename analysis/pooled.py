"""The pooled model of a sweep: where accuracy peaks in alpha, as a smooth function of the kept fraction f.

Model (one group = one (dataset, method, teacher, student) with the shared f = 1 cell; alpha in unit
coordinates u = (alpha - low) / (high - low) of the searched range):

    acc_i = c_j - k_j * s_j(u_i) * (u_i - m(x_j))^2 + e_i,     x_j = ln f_j,   k_j >= 0,   e_i ~ N(0, sigma^2)

    s_j(u) = 1 below the peak (u < m), r_j above it,   r_j in RATIOS (1/5 to 5, nine steps even in log)

- c_j: an offset per cell (cell = method, f, teacher, student and replicate): accuracy levels differ
  wildly between fractions and replicates (their own teacher, scores and subsets: the blocks), and
  nothing about them is shared;
- r_j: how much steeper the peak falls above its location than below, per cell, from 1/5 to 5 (the
  best on the grid, like c_j and k_j). A peak need not be a parabola: with real students accuracy
  often falls faster past the optimum (towards the teacher alone) than before it. Fitting a symmetric
  parabola to a peak three times steeper on one side moved the estimated location by about 0.1 towards
  the gentle side, and the intervals, which pooling makes narrow, covered the truth in 49 % of cells
  (``bench/bench_calibration.py --shapes asymmetric``). A free ratio (0 to infinity) fixes the bias but
  lets a flat side absorb any misfit, and the location is then barely informed (power against the
  inverse truth fell from 77 % to 8 % per method); a bounded range keeps both. The bound is
  ``RATIO_BOUND`` = 5. It was 3 first (coverage 90 % with that asymmetric peak at the default noise),
  but at the lower noise of real sweeps a 3 : 1 peak sits at that bound: the profiled ratio cannot
  follow noise that asks for a steeper side, the location leans to the gentle side instead, and the
  coverage fell to 86-88 %; at 5 it is 96 % (analysis/CALIBRATION.md, measured side by side with
  ``bench/bench_calibration.py --ratio-bound``). Real peaks ask for it: fitted alone with ratios from
  1/10 to 10, the best ratio of 58 % of the self-distillation study's cells (8 or more distinct alphas,
  the peak inside the range) lies at an end, against 33-42 % for simulated parabolas and 3 : 1 peaks at
  the same noise. The price is power: the peaks' family is wider, each location less firm, and the
  no-relation truths lie nearer to every alternative (analysis/CALIBRATION.md gives the rows). The ratio is
  profiled (the best per cell), not integrated out: averaged over the grid with a uniform prior, a
  3 : 1 peak, near the grid's end, has fewer well-fitting ratios than a symmetric one, the average
  pulls its location towards the symmetric fit, and its coverage fell from 96 % to 82 % (analysis/CALIBRATION.md);
- k_j >= 0: a curvature per cell, how much alpha matters there. It is free per cell because the KD
  effect's size changes with f and method; it is held non-negative so that a cell whose trials show
  no peak fits a flat line (k_j = 0) and then says nothing about where the peak is, instead of
  feeding the curve a maximiser of noise. A cell with fewer than three distinct alphas fits its
  trials exactly for any m and so carries no information about m either: that is automatic, not a rule;
- m(x): the location of the peak, shared by the group, a polynomial in ln f: quadratic (three
  anchors: the peak at the smallest f, the middle of the log range and the largest f) with four or
  more distinct fractions, linear with two or three, constant with one. Quadratic in ln f follows
  the paper's a + b/f as well as the flat and direct shapes across a decade of f (checked in the
  calibration harness, whose "inverse" truth is a + b/f and so not in the family), and the anchors
  are directly interpretable parameters with a natural uniform prior.

Why this model: alpha*(f) is a smooth curve across cells (DESIGN 6b) and one cell holds 3 to 16
noisy trials, which locate a peak poorly on their own (a quadratic through three points put "the
optimum" at 119 % accuracy). Pooling the location across cells and keeping everything else per cell
lets every informative cell contribute exactly its information and no cell contribute more.

Inference: for fixed anchors and ratio, c_j and k_j have a closed-form constrained least-squares
solution (sums on either side of the peak are differences of cumulative sums over the cell's trials
sorted by alpha), so the residual sum of squares RSS(anchors), minimised over each cell's ratio, is
exact and cheap. The posterior of the anchors (uniform
prior on [-0.25, 1.25] of the range each, so a peak just beyond the searched range is allowed) is
exp(-RSS / (2 sigma^2)) on a grid (coarse, then fine where the mass is), with sigma estimated once
per report from the residuals of every method's best fit (all methods share the trial-to-trial
noise, so this has many degrees of freedom even at 3 trials per cell). alpha*(f) is the posterior
median of m(ln f) clipped to the searched range (the maximiser over the range of a concave
parabola), its interval the 2.5 and 97.5 % posterior quantiles. Coverage, error and the error rate
of the test are checked by ``bench/bench_calibration.py`` on simulated sweeps with a known answer.

The direction of the alpha-f relation is tested on the optimum clipped to the searched range, as the
report prints alpha*, so an optimum at the edge counts for what it is: at small f the best student
often uses the teacher alone (alpha* = 1, its unclipped peak somewhere beyond the range, which the
trials cannot locate), and alpha* falling from 1 to 0.3 is a fall. (The test before, the unclipped
slope of a line anchored at the ends of the log-f range, printed "no evidence" beside tight intervals
falling from 1 to 0.35.) Two statistics, both the least-squares slope against log10 f of the clipped
location over the group's fractions (alpha per tenfold change of f; negative = inverse):

- on the curve the report prints (quadratic in ln f): it sees a fall from the edge (flat at 1, then
  down), which a line cannot follow;
- on a straight line in ln f (under the null, alpha* the same at every f, exact) whose anchors sit at
  a quarter and three quarters of the log-f range, where the data inform them (at an end, a peak
  beyond the range is free and the prior's edge would cap the slope): it spends no power on
  curvature, so it keeps the power where the optimum lies inside the range (the paper's a + b/f).

Each gives a two-sided p-value, twice the smaller posterior probability of its slope's sign (draws
pinned at the edge at every f, slope exactly 0, count half to each side, so an optimum at 1
everywhere is no relation); the test's p-value is the smaller of the two doubled (Bonferroni: the
error rate holds whatever their dependence), its direction that statistic's sign. When that p is at most 5 % (the largest level any direction is tested at) it is
calibrated at the no-relation truth closest to the data (``calibrate``): each cell's shape is profiled
from a few noisy trials and its estimated location leans with it, so a shape that changes with f can
read as a slope, and pooling many cells makes the lean significant; 60 sweeps simulated from that null
measure the lean, and the test's p is the larger of the posterior's and the calibrated one. The effect size
printed is the printed curve's slope with its 95 % interval. Across the methods of one report (and
the pooled group) the p-values go through a graphical procedure at 5 % (``graphical_simes``; the
pooled fit first, then Hommel's procedure among the methods, ``analysis.alpha_f.adjust_directions``),
which bounds the family-wise error rate when the tests are positively dependent, as they are (they
share the f = 1 cell; ``graphical``, with Bonferroni tests and Holm's procedure among the methods,
bounds it under any dependence and was the report's until 2026-12-07). The error rates and the power against both kinds of truth are printed by
``bench/bench_calibration.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
from scipy import stats as sps

from analysis import workers

LEVEL = 0.95
SIGNIFICANCE = 0.05
BOX = (-0.25, 1.25)  # prior range of every anchor, in unit alpha
COARSE = {1: 301, 2: 61, 3: 25}
FINE = {1: 801, 2: 121, 3: 31}
MIN_NOISE_DF = 3
PINNED_WIDTH = 0.5  # an interval narrower than half the searched range pins the optimum


RATIO_BOUND = 5.0  # how much steeper one side of the peak may be than the other (the module's docstring says why 5)


def ratio_grid(bound: float) -> np.ndarray:
    """The sides' ratios a peak may have: 1/bound to bound, even in log, in steps of about 3^(1/3) (seven for 3, nine for 5)."""
    steps = max(1, round(math.log(bound) / (math.log(3.0) / 3)))
    return bound ** np.linspace(-1, 1, 2 * steps + 1)


RATIOS = ratio_grid(RATIO_BOUND)
_SPAN = 4.0  # wider than BOX and the alphas' padding: cells laid end to end never overlap


@dataclass
class CellStats:
    """Sufficient statistics of the completed trials of cells (one entry per cell): every cell's trials
    sorted by alpha with cumulative power sums, so that the sums on either side of a candidate peak are
    differences of two rows."""

    n: np.ndarray  # (C,) trials
    distinct: np.ndarray  # (C,) distinct alphas
    syy: np.ndarray  # (C,) centred sum of squares of accuracy
    sorted_u: np.ndarray  # (C, N) each cell's alphas ascending, padded with +inf
    cum: np.ndarray  # (C, N + 1, 8) cumulative sums of 1, u, u^2, u^3, u^4, y, u y, u^2 y (y centred per cell)

    @classmethod
    def of(cls, cells: list[tuple[np.ndarray, np.ndarray]]) -> CellStats:
        width = max([len(u) for u, _ in cells] + [1])
        n, distinct, syy = np.zeros(len(cells)), np.zeros(len(cells)), np.zeros(len(cells))
        sorted_u = np.full((len(cells), width), np.inf)
        cum = np.zeros((len(cells), width + 1, 8))
        for c, (u, y) in enumerate(cells):
            u, y = np.asarray(u, float), np.asarray(y, float)
            if len(u) == 0:
                continue
            dy = y - y.mean()
            n[c], distinct[c], syy[c] = len(u), len(np.unique(np.round(u, 9))), dy @ dy
            order = np.argsort(u, kind="stable")
            us, ys = u[order], dy[order]
            sorted_u[c, :len(u)] = us
            powers = np.stack([np.ones_like(us), us, us**2, us**3, us**4, ys, us * ys, us**2 * ys], 1)
            cum[c, 1:len(u) + 1] = np.cumsum(powers, 0)
            cum[c, len(u) + 1:] = cum[c, len(u)]
        return cls(n=n, distinct=distinct, syy=syy, sorted_u=sorted_u, cum=cum)

    def params(self) -> np.ndarray:
        """Parameters each cell spends as its distinct alphas allow: offset, curvature, and the sides' ratio
        from four distinct alphas on (with three, a bounded ratio rarely lets the peak pass
        through all of them, and counting it would leave a 3-trial cell no degree of freedom for the noise).
        The ratio counts also where every trial lies on one side of the fitted peak (an optimum beyond the
        searched range), where it changes no fitted value: that overstates sigma by 4-5 % there, and the
        pooled direction test's level at the nearest no-relation truth to a shallow fall from the edge rests
        on it (counted only where it acts: false findings there 7 % instead of 5 % over 300 sweeps; analysis/CALIBRATION.md,
        "The direction test and its error control")."""
        return np.minimum(self.distinct, 2) + (self.distinct >= 4)


def _explained_per_ratio(st: CellStats, v: np.ndarray):
    """Each ratio of ``RATIOS`` in turn: (..., C) the sum of squares each cell's best peak at ``v`` with
    that ratio explains (``peak_rss_by_ratio`` says what the peak is): its RSS is ``st.syy`` less it."""
    v = np.asarray(v, float)  # may be (..., 1), one location for every cell: its powers are then cheap
    cells, width = st.sorted_u.shape
    shape = np.broadcast_shapes(v.shape[:-1] + (cells,), v.shape)
    # trials below the candidate peak, per (candidate, cell): one sorted search over the cells laid end to
    # end (cell c's alphas shifted by c * _SPAN; every alpha and candidate lies within BOX)
    shift = np.arange(cells) * _SPAN
    laid = np.where(np.isfinite(st.sorted_u), st.sorted_u, BOX[1] + 1) + shift[:, None]
    below = np.searchsorted(laid.ravel(), np.broadcast_to(v + shift, shape), side="left") - np.arange(cells) * width
    # the sums below and above v, one contiguous (..., C) array per power (strided views of the last axis
    # of a (..., C, 8) array made every operation below several times slower)
    at = below + np.arange(cells) * (width + 1)  # flat positions in each power's (C, width + 1) table
    total = st.cum[np.arange(cells), st.n.astype(int)]  # (C, 8)
    low = [np.take(np.ascontiguousarray(st.cum[:, :, i]), at) for i in range(8)]
    high = [total[:, i] - low[i] for i in range(8)]
    n = np.maximum(st.n, 1)
    v2 = v**2
    v3, v4 = v**3, v**4

    def side(s):
        """Sums of z = (u - v)^2, z^2 and z y over one side's trials."""
        s0, s1, s2, s3, s4, sy, s1y, s2y = s
        z = s2 - 2 * v * s1 + v2 * s0
        zz = s4 - 4 * v * s3 + 6 * v2 * s2 - 4 * v3 * s1 + v4 * s0
        zy = s2y - 2 * v * s1y + v2 * sy
        return z, zz, zy

    zl, zzl, zyl = side(low)
    zh, zzh, zyh = side(high)
    # centred (co)variances of the two sides' regressors (y is centred per cell: its sum is 0)
    a, b, ab = zzl - zl**2 / n, zzh - zh**2 / n, -zl * zh / n
    # in place where it can be (the same arithmetic as a + r r b + 2 r ab, szy^2 / szz): RssTable.of runs
    # this loop on every cell of every calibration draw, and each fresh temporary costs its page faults
    for r in RATIOS:
        szz = b * (r * r)  # the regressor z_low + r z_high, centred
        szz += a
        szz += (2 * r) * ab
        szy = zyh * r  # its covariance with y, sign flipped: the peak is a maximum (k >= 0)
        szy += zyl
        np.negative(szy, out=szy)
        ok = (szy > 0) & (szz > 1e-12)
        szz[~ok] = 1.0
        np.square(szy, out=szy)
        szy /= szz
        szy[~ok] = 0.0
        yield szy


def peak_rss_by_ratio(st: CellStats, v: np.ndarray) -> np.ndarray:
    """RSS of each cell's best peak at ``v`` (unit alpha; v (..., C), or (..., 1) for one location shared by
    every cell) for every ratio of ``RATIOS``: (..., C, R). The peak: y = c - k (u - v)^2 below v and
    c - r k (u - v)^2 above, k >= 0 (the offset and the curvature in closed form, as least squares with k
    held non-negative)."""
    return np.stack([np.maximum(st.syy - explained, 0.0) for explained in _explained_per_ratio(st, v)], -1)


def peak_rss(st: CellStats, v: np.ndarray) -> np.ndarray:
    """RSS of each cell's best peak at ``v`` (unit alpha), the ratio of its sides chosen per cell; v (..., C)
    or (..., 1)."""
    # the RSS falls as the explained sum of squares grows, so the best ratio's is syy less the largest
    # (bit for bit what the smallest RSS over the ratios was: a subtraction's rounding keeps that order)
    best = None
    for explained in _explained_per_ratio(st, v):
        best = explained if best is None else np.maximum(best, explained, out=best)
    return np.maximum(st.syy - best, 0.0)


# Where each cell's RSS is tabulated: every location a posterior grid gives a cell (a line through
# anchors in BOX at a quarter and three quarters of the log-f range reaches -1 and 2 at its ends).
TABLE_STEP = 0.001  # interpolation error per cell ~ RSS'' step^2 / 8: under 1e-6 (a 5 : 1 side's), against 2 sigma^2 ~ 1e-4
TABLE = np.linspace(-1.0, 2.0, round(3.0 / TABLE_STEP) + 1)


class RssTable:
    """Each cell's ``peak_rss`` as a function of its peak's location, tabulated on ``TABLE`` and
    interpolated linearly: a cell's RSS depends on the curve only through the location it gives that
    cell, so one pass over the table replaces evaluating every cell at every grid point of a posterior
    (ten times fewer operations; what makes the direction test's simulations affordable). A location
    beyond the table counts as its end."""

    def __init__(self, values: np.ndarray):
        self.values = values  # (C, len(TABLE))

    @classmethod
    def of(cls, st: CellStats, chunk: int = 16) -> RssTable:
        cells = len(st.n)
        values = np.empty((cells, len(TABLE)))
        # a chunk of cells at a time: each of the dozens of (len(TABLE), chunk) arrays the RSS is made of
        # (400 KB at 16 cells) then stays in a core's L2 cache; at 64 cells the same table took 2.4
        # times as long (600 cells of 16 trials: 0.44 s against 0.18 s), the numbers bit for bit the same
        for start in range(0, cells, chunk):
            part = CellStats(n=st.n[start:start + chunk], distinct=st.distinct[start:start + chunk],
                             syy=st.syy[start:start + chunk], sorted_u=st.sorted_u[start:start + chunk],
                             cum=st.cum[start:start + chunk])
            values[start:start + chunk] = peak_rss(part, TABLE[:, None]).T
        return cls(values)

    def rows(self, start: int, stop: int) -> RssTable:
        return RssTable(self.values[start:stop])

    def summed(self, group: np.ndarray, groups: int) -> RssTable:
        """One row per group of cells (``group``: each cell's, 0 to ``groups`` - 1): the sum of its cells' RSS.
        Cells that always sit at the same location (the same ln f on one curve) enter a posterior only
        through that sum, and a linear interpolation of the sum is the sum of the interpolations."""
        return RssTable((np.arange(groups)[:, None] == group[None, :]).astype(float) @ self.values)

    def total(self, v: np.ndarray, rows: int = 4096) -> np.ndarray:
        """(G,) the cells' summed RSS at locations ``v`` (G, C), a block of rows at a time: a posterior's
        (G, C) temporaries then stay in a core's L2 cache (29,791 grid points x 6 cells: 1.6 ms against
        4.5 ms in one piece, the sums bit for bit the same)."""
        out = np.empty(len(v))
        for start in range(0, len(v), rows):
            out[start:start + rows] = self(v[start:start + rows]).sum(1)
        return out

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """(..., C) RSS at locations ``v`` (..., C)."""
        # in place where it can be: a posterior calls this thousands of times on (grid, cells) arrays, and
        # each fresh temporary of that size costs its page faults (the arithmetic is the plain formula's)
        weight = np.clip(v, TABLE[0], TABLE[-1])
        weight -= TABLE[0]
        weight /= TABLE_STEP
        at = np.minimum(weight.astype(np.int64), len(TABLE) - 2)
        weight -= at
        at += np.arange(self.values.shape[0]) * len(TABLE)  # flat positions: one gather, not two-axis indexing
        flat = self.values.ravel()
        below = np.take(flat, at)
        at += 1
        above = np.take(flat, at)
        below *= 1 - weight
        above *= weight
        below += above
        return below


def lagrange(anchors: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(len(x), A) weights: m(x) = weights @ anchor values (the polynomial through the anchors)."""
    x = np.asarray(x, float)
    out = np.ones((len(x), len(anchors)))
    for a, xa in enumerate(anchors):
        for b, xb in enumerate(anchors):
            if a != b:
                out[:, a] *= (x - xb) / (xa - xb)
    return out


def anchors_for(x: np.ndarray, most: int = 3, interior: bool = False) -> np.ndarray:
    """Where the location's anchors sit (ln f): the ends and the middle of the group's range; with
    ``interior`` a line's two anchors sit at a quarter and three quarters of the range instead (the
    direction test), where the data inform them: a peak beyond the searched range at an end is free
    there, and an anchor at the end would cap the line's slope at the prior's edge."""
    distinct = np.unique(x)
    if len(distinct) >= 4 and most >= 3:
        return np.array([distinct[0], (distinct[0] + distinct[-1]) / 2, distinct[-1]])
    if len(distinct) >= 2 and most >= 2:
        low, high = distinct[0], distinct[-1]
        return np.array([low + (high - low) / 4, high - (high - low) / 4]) if interior else np.array([low, high])
    return distinct[:1]


def _grid(lows, highs, points) -> np.ndarray:
    axes = [np.linspace(lo, hi, points) for lo, hi in zip(lows, highs)]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)


def min_rss(st: CellStats, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(min RSS, best anchor values, anchors' x) over the coarse grid then a local refinement."""
    anchors = anchors_for(x)
    basis = lagrange(anchors, x)  # (C, A)
    a = len(anchors)
    grid = _grid([BOX[0]] * a, [BOX[1]] * a, COARSE[a])
    rss = peak_rss(st, grid @ basis.T).sum(1)
    best = grid[np.argmin(rss)]
    step = (BOX[1] - BOX[0]) / (COARSE[a] - 1)
    for _ in range(3):
        fine = _grid(best - step, best + step, 11 if a < 3 else 9)
        rss_f = peak_rss(st, fine @ basis.T).sum(1)
        best, step = fine[np.argmin(rss_f)], step / 4
    return float(rss_f.min()), best, anchors


def noise_df(st: CellStats, n_anchors: int) -> float:
    return float(st.n.sum() - st.params().sum() - n_anchors)


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    return np.array([v[min(np.searchsorted(cdf, q), len(v) - 1)] for q in qs])


@dataclass
class LocationPosterior:
    """The posterior of the peak's location m(ln f) of one group, on a grid of anchor values."""

    anchors: np.ndarray  # (A,) x positions (ln f)
    grid: np.ndarray  # (G, A) anchor values (unit alpha)
    weights: np.ndarray  # (G,) normalised
    x: np.ndarray  # the group's distinct ln f

    def m(self, x: np.ndarray) -> np.ndarray:
        """(G, len(x)) peak location (unit alpha, unclipped) for every grid point."""
        return self.grid @ lagrange(self.anchors, np.atleast_1d(x)).T

    def clipped_slope(self) -> np.ndarray:
        """(G,) least-squares slope against log10 f of the peak location clipped to the searched range
        (unit alpha) over the group's fractions: the slope of the alpha*(f) a report prints."""
        if len(self.x) < 2:
            return np.zeros(len(self.grid))
        xs = self.x / math.log(10)
        d = xs - xs.mean()
        return np.clip(self.m(self.x), 0.0, 1.0) @ d / (d @ d)

    def summary(self, values: np.ndarray) -> tuple[float, float, float]:
        tail = (1 - LEVEL) / 2
        lo, mid, hi = weighted_quantiles(values, self.weights, [tail, 0.5, 1 - tail])
        return float(mid), float(lo), float(hi)

    def draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, A) anchor values drawn from the posterior (jittered within their grid cell)."""
        pick = rng.choice(len(self.grid), size=n, p=self.weights)
        steps = np.array([np.ptp(np.unique(self.grid[:, a])) / max(1, len(np.unique(self.grid[:, a])) - 1)
                          for a in range(self.grid.shape[1])])
        return self.grid[pick] + rng.uniform(-0.5, 0.5, size=(n, len(steps))) * steps


def location_posterior(st: CellStats | RssTable, x: np.ndarray, sigma2: float, most: int = 3,
                       interior: bool = False) -> LocationPosterior:
    """The grid posterior of the anchors given the noise variance ``sigma2`` (at most ``most`` anchors,
    each uniform on ``BOX``; ``interior``: see ``anchors_for``), from the cells' statistics or their
    tabulated RSS (``RssTable``)."""
    rss = st if isinstance(st, RssTable) else RssTable.of(st)
    anchors = anchors_for(x, most, interior)
    # every grid point gives the cells of one fraction the same location: their RSS is summed once here,
    # not at each of the grid's points (several methods and replicates share each fraction)
    distinct, group = np.unique(np.asarray(x, float), return_inverse=True)
    if len(distinct) < len(group):
        rss, x = rss.summed(group.ravel(), len(distinct)), distinct
    basis = lagrange(anchors, x)
    a = len(anchors)
    coarse = _grid([BOX[0]] * a, [BOX[1]] * a, COARSE[a])
    logw = -rss.total(coarse @ basis.T) / (2 * sigma2)
    keep = coarse[logw > logw.max() - 20]
    step = (BOX[1] - BOX[0]) / (COARSE[a] - 1)
    lows = np.maximum(keep.min(0) - step, BOX[0])
    highs = np.minimum(keep.max(0) + step, BOX[1])
    grid = _grid(lows, highs, FINE[a])
    logw = -rss.total(grid @ basis.T) / (2 * sigma2)
    w = np.exp(logw - logw.max())
    keep = w > 1e-12
    grid, w = grid[keep], w[keep]
    return LocationPosterior(anchors=anchors, grid=grid, weights=w / w.sum(), x=np.unique(x))


TIE = 1e-9  # a slope this close to 0 is no slope (an optimum clipped to one edge at every f, up to rounding)


def sign_p_value(slope: np.ndarray, weights: np.ndarray) -> float:
    below = float(weights[slope < -TIE].sum())
    above = float(weights[slope > TIE].sum())
    tie = max(0.0, 1.0 - below - above)
    return float(min(1.0, 2 * min(below + tie / 2, above + tie / 2)))


def peak_curve(u: np.ndarray, y: np.ndarray, v: float, ratio: float) -> tuple[float, float]:
    """(level, k) of the least-squares peak at ``v`` with sides' ``ratio`` through one cell's trials:
    y = level - k s(u) (u - v)^2, s = 1 below v and ``ratio`` above, k >= 0."""
    z = np.where(u < v, 1.0, ratio) * (u - v) ** 2
    dz = z - z.mean()
    k = max(0.0, -float(dz @ (y - y.mean())) / float(dz @ dz)) if dz @ dz > 1e-12 else 0.0
    return float(y.mean() + k * z.mean()), k


# The no-relation truths the direction test must hold its level at: one peak location for every f
# inside the searched range, or every cell's peak beyond the same edge (each its own: alpha* = 1 at
# every f is no relation whatever lies beyond 1; up to 1.2 beyond, well inside what CellStats pads).
NULL_INSIDE = np.linspace(0.0, 1.0, 801)
NULL_BEYOND = (np.linspace(1.0, 2.2, 481), np.linspace(-1.2, 0.0, 481))


def no_relation_fit(st: CellStats) -> tuple[float, np.ndarray]:
    """(RSS, each cell's peak location) of the no-relation model closest to the cells' trials (least
    squares over the peaks this module fits: an offset, a curvature and a sides' ratio per cell).

    Beyond the edge each cell's least-squares peak tends to overshoot a truth at the edge, where a
    peak's shape makes the most lean; moving the peaks back to the edge end of what each cell's trials
    allow held the pooled test's level there but cost more power than it freed (analysis/CALIBRATION.md, "The direction
    test and its error control")."""
    cells = len(st.n)
    shared = peak_rss(st, NULL_INSIDE[:, None]).sum(1)  # (V, 1): one location for every cell
    best = (float(shared.min()), np.full(cells, NULL_INSIDE[int(np.argmin(shared))]))
    for peaks in NULL_BEYOND:
        rss = peak_rss(st, peaks[:, None])  # (V, C): each cell its own peak
        if rss.min(0).sum() < best[0]:
            best = (float(rss.min(0).sum()), peaks[rss.argmin(0)])
    return best


def no_relation_means(cells: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Each cell's expected accuracy at its trials under ``no_relation_fit``: the no-relation truth
    closest to the data, from which the direction test's calibration simulates."""
    st = CellStats.of(cells)
    _, peaks = no_relation_fit(st)
    by_ratio = peak_rss_by_ratio(st, peaks[None, :])[0]  # (C, R)
    means = []
    for (u, y), v, rss in zip(cells, peaks, by_ratio):
        u, y = np.asarray(u, float), np.asarray(y, float)
        ratio = float(RATIOS[int(np.argmin(rss))])
        level, k = peak_curve(u, y, float(v), ratio)
        means.append(level - k * np.where(u < v, 1.0, ratio) * (u - v) ** 2)
    return means


CALIBRATION_DRAWS = 60  # simulated sweeps per calibrated test: the mean and sd of its null statistic
# per replicate, for the lean a t test over replicates subtracts: that lean's Monte Carlo error is part of
# the spread between the replicates' corrected slopes (alpha_f.lean_corrected_t_test), where at 30 a
# plug-in lean adds about a tenth to it at the study's design (a bias-corrected draw varies more), at half
# the cost of 60 (each draw is one posterior fit, two and a null fit when bias-corrected)
LEAN_DRAWS = 30


def simulated_sweep(cells: list[tuple[np.ndarray, np.ndarray]], means: list[np.ndarray], sd: float,
                    rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``cells``' alphas with accuracies drawn around ``means`` (one array per cell), noise sd ``sd``."""
    return [(u, mean + rng.normal(0.0, sd, len(mean))) for (u, _), mean in zip(cells, means)]


def tables_of(sweeps: list[list[tuple[np.ndarray, np.ndarray]]]) -> list[RssTable]:
    """Each sweep's cells as one RssTable, built for every sweep in one vectorised pass."""
    count = len(sweeps[0])
    tables = RssTable.of(CellStats.of([cell for sweep in sweeps for cell in sweep]))
    return [tables.rows(d * count, (d + 1) * count) for d in range(len(sweeps))]


def null_statistic(cells: list[tuple[np.ndarray, np.ndarray]], sigma2: float, rng: np.random.Generator, draws: int,
                   statistic, bias_corrected: bool, paired: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``statistic`` (of a sweep's RssTable) at the no-relation truth closest to ``cells``, simulated:
    (its value on each of ``draws`` sweeps simulated there, the values a calibration uses: with
    ``bias_corrected`` the same draws corrected for fitting that truth to the data it is then held
    against, else the same values). The simulated sweeps are fitted in ``analysis.workers``' processes
    (``statistic`` must pickle: ``SignedZ``, ``PrintedSlope``); every draw is made here, in order, so
    the values are the same at any number of processes.

    Why the correction: the truth is fitted to noisy trials (``no_relation_means``), and the fit
    flattens what makes the statistic lean (a peak's shape changing with f): at the nearest no-relation
    truth to the inverse relation (``analysis.simulate``), over 80 sweeps of 5 methods x 6 f at 16
    students per cell, the pooled direction test's signed z had mean -2.10, while the truths fitted to
    the same sweeps leaned -1.38 on average; the test held against them found a direction in 11 %.
    How (the parametric bootstrap's bias correction): each simulated sweep b is fitted again and one
    sweep simulated from that fit gives s'_b; s_b - s'_b is the fit's shortfall seen one level down,
    and 2 s_b - s'_b adds it back. On those 80 sweeps the corrected lean averaged -1.71 and the test
    found a direction in 4 %. The corrected values' mean is the lean, their variance over ``draws``
    that mean's Monte Carlo error.

    ``paired`` (a candidate, not the report's: analysis/CALIBRATION.md, "Paired draws"): the shortfall
    is measured with common random numbers, s''_b - s'_b, s''_b the statistic at the truth fitted to
    the data with the same noise as s'_b; each value is s_b + s''_b - s'_b. Its mean estimates the
    same lean (E s''_b = E s_b), but the pair differs only by the truth, not the noise: at the paper's
    inverse relation the shortfall's draws spread about a third as much (sd 0.38 against 1.05 in
    one sweep's five method fits), and over 60 sweeps a method's fitted shortfall had varied between
    fits about as much as its Monte Carlo error (0.15 against 0.14): that noise, not the correction's
    size, cost the method fits most of their power when they were corrected unpaired. A third fit
    per draw.

    Only the pooled fits ask for it (``analysis.alpha_f``): there many cells make the lean's shortfall
    a false finding (over 150 sweeps at that truth 9 % of sweeps found a direction, the pooled fit in
    nearly all), while a method's own fit held its level with the fitted truth (1 % false) and the
    correction cost it power it did not need to give (against the paper's inverse relation 88-92 %
    per method became 70-80 %, against a steep fall from the edge 80 % became 69 %)."""
    sd = math.sqrt(sigma2)
    means = no_relation_means(cells)
    first = [simulated_sweep(cells, means, sd, rng) for _ in range(draws)]
    # the second level's noise drawn here, in the order a loop over the first level's fits would draw
    # it (a simulated sweep's noise does not depend on its means), so the fits can run in any process
    second_noise = [[rng.normal(0.0, sd, len(u)) for u, _ in cells] for _ in first] if bias_corrected else None
    tasks = [(statistic, [first[d] for d in block], None if second_noise is None else [second_noise[d] for d in block],
              means if paired else None) for block in workers.blocks(draws, workers.jobs())]
    values, again, at_data_truth = (np.array([v for part in parts for v in part])
                                 for parts in zip(*workers.map_in_workers(_simulated_statistic, tasks)))
    if not bias_corrected:
        return values, values
    if paired:
        return values, values + at_data_truth - again
    return values, 2 * values - again


def _simulated_statistic(task) -> tuple[list[float], list[float], list[float]]:
    """``null_statistic``'s fits of one block of simulated sweeps: (the statistic on each; on the sweep
    simulated from each one's own nearest no-relation truth with the noise given, empty without; and,
    given the data's own nearest truth ``means``, on that truth with the same noise, empty without)."""
    statistic, sweeps, second_noise, means = task
    values = [statistic(table) for table in tables_of(sweeps)]
    if second_noise is None:
        return values, [], []
    second = [[(u, mean + noise) for (u, _), mean, noise in zip(sweep, no_relation_means(sweep), noises)]
              for sweep, noises in zip(sweeps, second_noise)]
    again = [statistic(table) for table in tables_of(second)]
    if means is None:
        return values, again, []
    same = [[(u, mean + noise) for (u, _), mean, noise in zip(sweep, means, noises)]
            for sweep, noises in zip(sweeps, second_noise)]
    return values, again, [statistic(table) for table in tables_of(same)]


@dataclass(frozen=True)
class PrintedSlope:
    """The printed curve's clipped slope (posterior median, unit alpha per decade) of a sweep's table."""

    x: np.ndarray
    sigma2: float

    def __call__(self, table: RssTable) -> float:
        post = location_posterior(table, self.x, self.sigma2)
        return post.summary(post.clipped_slope())[0]


@dataclass(frozen=True)
class SignedZ:
    """The direction test's signed z (``DirectionTest.signed_z``) of a sweep's table."""

    x: np.ndarray
    sigma2: float

    def __call__(self, table: RssTable) -> float:
        return direction_test(table, self.x, self.sigma2).signed_z


def null_slopes(cells: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, sigma2: float, rng: np.random.Generator,
                draws: int = LEAN_DRAWS, bias_corrected: bool = False, paired: bool = False) -> np.ndarray:
    """The printed curve's clipped slope (posterior median, unit alpha per decade) on ``draws`` sweeps
    simulated at the no-relation truth closest to ``cells`` (``null_statistic``; with ``bias_corrected``
    each draw corrected as there): its lean there (the mean) and that lean's spread, which a test over
    replicates' slopes subtracts (``analysis.alpha_f.replicate_level``)."""
    return null_statistic(cells, sigma2, rng, draws, PrintedSlope(x, sigma2), bias_corrected, paired)[1]


@dataclass
class DirectionTest:
    """The posterior sign test of the clipped optimum's slope (see the module's docstring)."""

    curve: LocationPosterior  # the printed curve (quadratic in ln f)
    line: LocationPosterior  # the line with interior anchors
    p_curve: float
    p_line: float

    @property
    def decided_by(self) -> str:
        return "curve" if self.p_curve <= self.p_line else "line"

    @property
    def p_value(self) -> float:
        """The smaller of the two doubled (Bonferroni), before calibration."""
        return min(1.0, 2 * min(self.p_curve, self.p_line))

    @cached_property  # a weighted median over the whole grid, read twice by every calibration draw
    def slope(self) -> float:
        """The deciding statistic's slope (posterior median, unit alpha per decade): its sign is the direction."""
        post = self.curve if self.decided_by == "curve" else self.line
        return post.summary(post.clipped_slope())[0]

    @property
    def signed_z(self) -> float:
        """The p-value as a signed normal quantile (positive: direct), the scale the calibration compares on."""
        z = float(sps.norm.isf(max(self.p_value, 1e-12) / 2))
        return math.copysign(z, self.slope) if abs(self.slope) > TIE else 0.0


def direction_test(source: CellStats | RssTable, x: np.ndarray, sigma2: float,
                   curve: LocationPosterior | None = None) -> DirectionTest:
    """The sign test of the clipped slope on the printed curve (``curve``, when already fitted) and on
    the interior line."""
    table = source if isinstance(source, RssTable) else RssTable.of(source)
    curve = curve or location_posterior(table, x, sigma2)
    line = location_posterior(table, x, sigma2, most=2, interior=True)
    return DirectionTest(curve=curve, line=line, p_curve=sign_p_value(curve.clipped_slope(), curve.weights),
                         p_line=sign_p_value(line.clipped_slope(), line.weights))


@dataclass
class Calibration:
    """The direction test's statistic at the closest no-relation truth, simulated (``calibrate``)."""

    p_value: float  # max(posterior p, calibrated p): what the test decides on
    p_calibrated: float
    null_mean: float  # of the signed z at that truth (bias-corrected for a pooled fit: null_statistic)
    null_sd: float  # of the signed z over the draws there
    draws: int


def calibrate(cells: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, sigma2: float, observed: DirectionTest,
              rng: np.random.Generator, draws: int = CALIBRATION_DRAWS, bias_corrected: bool = False,
              paired: bool = False) -> Calibration:
    """The direction test calibrated at the no-relation truth closest to the data.

    Why: each cell's peak has its own shape (the sides' ratio), profiled from 3-16 noisy trials, and a
    peak's estimated location leans with its shape. When the shape changes with f (steeper above the
    peak at small f, below it at large f) the locations lean differently at each f and the posterior
    sees a slope where the optimum does not move; pooling many cells makes the interval narrow and the
    lean significant. At the no-relation truth closest to an inverse one (``analysis.simulate``'s
    ``nearest_inverse``) the posterior test found a direction in 75 % of sweeps (5 methods x 6 f,
    16 students per cell).

    How: simulate ``draws`` sweeps from the closest no-relation truth to the data (``null_statistic``:
    the same alphas, the noise sd sqrt(sigma2); with ``bias_corrected``, for a pooled fit, the fitted
    truth's lean corrected for its shortfall), run the same
    test on each and compare the observed signed z with the simulated ones' mean and sd, as a
    prediction: t = (z - mean) / sqrt(sd^2 + se^2), se the corrected mean's Monte Carlo error, on
    draws - 1 degrees of freedom. When the data hold no relation, that truth is close to the one that
    made them, so the lean is measured and subtracted; when they hold one, it is the null least
    distinguishable from it, the one a valid test must hold its level at. The p-value is the larger of
    the posterior's and the calibrated one, so the test holds its level wherever either does (the
    calibrated one is normal-approximate: with every draw's optimum at the edge the simulated z have no
    spread, and there the posterior's p is exact)."""
    z, used = null_statistic(cells, sigma2, rng, draws, SignedZ(x, sigma2), bias_corrected, paired)
    p_calibrated = calibrated_p(observed.signed_z, z, used)
    return Calibration(p_value=max(observed.p_value, p_calibrated), p_calibrated=p_calibrated,
                       null_mean=float(used.mean()), null_sd=float(z.std(ddof=1)), draws=len(z))


def calibrated_p(observed_z: float, z: np.ndarray, used: np.ndarray) -> float:
    """``calibrate``'s p: the observed signed z against the simulated ones (``null_statistic``: ``z``, and
    ``used``, the values whose mean is the lean), two-sided around that mean, as a prediction on
    draws - 1 degrees of freedom (analysis/CALIBRATION.md compares it with other forms on the same draws:
    ``bench/bench_calibration_forms.py``)."""
    draws = len(z)
    spread = math.sqrt(float(z.std(ddof=1)) ** 2 + used.var(ddof=1) / draws)  # uncorrected: sd sqrt(1 + 1/draws)
    gap = abs(observed_z - float(used.mean()))
    if spread > 1e-9:
        return float(2 * sps.t.sf(gap / spread, draws - 1))
    return 1.0 if gap <= 1e-9 else 0.0


def holm(p_values: list[float] | np.ndarray, level: float = SIGNIFICANCE) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down procedure: (rejected, adjusted p-values), in the input order.

    Sort the m p-values ascending; reject p_(i) while p_(i) <= level / (m - i + 1) (i from 1), stop at
    the first that is not. Adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)). The family-wise
    error rate is at most ``level`` whatever the dependence between the tests.
    """
    p = np.asarray(p_values, float)
    m = len(p)
    adjusted = np.ones(m)
    rejected = np.zeros(m, bool)
    if m == 0:
        return rejected, adjusted
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="stable")
    running = 0.0
    going = True
    for rank, i in enumerate(order):
        value = 1.0 if np.isnan(p[i]) else min(1.0, (m - rank) * p[i])
        running = max(running, value)
        adjusted[i] = running
        if going and not np.isnan(p[i]) and p[i] <= level / (m - rank):
            rejected[i] = True
        else:
            going = False
    return rejected, adjusted


def graphical(p_values, weights, transitions, level: float = SIGNIFICANCE) -> tuple[np.ndarray, np.ndarray]:
    """The graphical multiple-testing procedure (Bretz, Maurer, Brannath and Posch, Statistics in Medicine
    2009): (rejected, adjusted p-values), in the input order. Hypothesis i starts with the share
    ``weights[i]`` of ``level`` (the shares sum to at most 1); when it is rejected its share passes on,
    ``transitions[i][k]`` of it to hypothesis k (rows sum to at most 1), and the graph is updated as the
    paper's algorithm does. The family-wise error rate is at most ``level`` whatever the dependence
    between the tests. Holm's procedure is the graph with equal weights and equal transitions; a
    hypothesis with weight 0 is tested only once others pass their share to it (gatekeeping).
    A NaN p-value is never rejected (adjusted 1) and passes nothing on."""
    p = np.asarray(p_values, float)
    m = len(p)
    w = np.asarray(weights, float).copy()
    g = np.asarray(transitions, float).reshape(m, m).copy()
    adjusted, rejected = np.ones(m), np.zeros(m, bool)
    active = [i for i in range(m) if not np.isnan(p[i])]
    running = 0.0
    while active:
        ratio = [p[i] / w[i] if w[i] > 0 else np.inf for i in active]
        j = active[int(np.argmin(ratio))]
        if not np.isfinite(min(ratio)):
            break  # no weight left on any remaining hypothesis: none can be rejected
        running = max(running, min(1.0, p[j] / w[j]))
        adjusted[j] = running
        rejected[j] = running <= level
        g = _pass_on(j, active, w, g)
    return rejected, adjusted


def direction_graph(fits: list[tuple[float, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """The weights and transitions of one report's direction tests, each fit given as (its label noise
    level, whether it is the pooled fit). Each label noise level has an equal share of the error rate;
    within a level the pooled fit holds it all when it is tested (the methods' curves agree), and when
    it is rejected its share passes to the level's methods equally, each method's to the level's other
    methods (a level's only method passes its share to the other levels). A pooled fit not tested (one
    method, or curves that differ) leaves the share to the level's methods from the start. With a single
    level and a pooled fit, tested with ``graphical_simes``: the pooled direction at 5 %, and once it is
    found the methods' with Hommel's procedure among them (none before). (Holm's procedure over all fits
    at once would test the pooled fit at 5 % / (methods + 1): with three replicates, whose t test has 2
    degrees of freedom, that needs a t of 8.9 instead of 4.3.)"""
    count = len(fits)
    weights, transitions = np.zeros(count), np.zeros((count, count))
    levels: dict[float, dict[str, list[int]]] = {}
    for i, (level, is_pooled) in enumerate(fits):
        levels.setdefault(level, {"pooled": [], "methods": []})["pooled" if is_pooled else "methods"].append(i)
    entries = {level: members["pooled"] or members["methods"] for level, members in levels.items()}
    for level, members in levels.items():
        for i in entries[level]:
            weights[i] = 1 / len(levels) / len(entries[level])
        others = [i for other, indices in entries.items() if other != level for i in indices]
        for i in members["pooled"]:
            _share(transitions, i, members["methods"] or others)
        for i in members["methods"]:
            _share(transitions, i, [k for k in members["methods"] if k != i] or others)
    return weights, transitions


def _share(transitions: np.ndarray, source: int, targets: list[int]) -> None:
    for k in targets:
        transitions[source, k] = 1 / len(targets)


def graphical_sequential(p_values, weights, transitions, level: float,
                         boundary: Callable[[float], float]) -> tuple[np.ndarray, np.ndarray]:
    """The graphical procedure at one look of a group-sequential design (Maurer and Bretz, Statistics
    in Biopharmaceutical Research 2013): hypothesis i, holding the share ``weights[i]`` of ``level``, is
    rejected when its p-value is at most ``boundary(weights[i] * level)``, the look's nominal level for
    a hypothesis spending that error rate over the looks (``analysis.sequential``); a rejected one
    passes its share on as ``graphical`` does, and the others are tested again at their larger shares.
    Returns (rejected, the nominal level each was last tested at), in the input order. With
    ``boundary`` the identity it rejects what ``graphical`` does."""
    p = np.asarray(p_values, float)
    m = len(p)
    w = np.asarray(weights, float).copy()
    g = np.asarray(transitions, float).reshape(m, m).copy()
    rejected, tested_at = np.zeros(m, bool), np.zeros(m)
    active = [i for i in range(m) if not np.isnan(p[i])]
    while active:
        for i in active:
            tested_at[i] = boundary(w[i] * level) if w[i] > 0 else 0.0
        clearing = [i for i in active if w[i] > 0 and p[i] <= tested_at[i]]
        if not clearing:
            break
        j = min(clearing, key=lambda i: p[i] / tested_at[i])  # the order does not change what is rejected
        rejected[j] = True
        g = _pass_on(j, active, w, g)
    return rejected, tested_at


def _pass_on(j: int, active: list[int], w: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Take hypothesis ``j`` out of ``active``, pass its weight on along ``g`` (``w`` updated in place)
    and return the updated graph."""
    active.remove(j)
    w[:], g = _without(j, w, g)
    return g


def _without(j: int, w: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph (weights, transitions) once hypothesis ``j`` leaves it (Bretz et al. 2009, algorithm 1):
    its weight passes on along its row, each path through it joins the one it bypasses, and nothing
    passes to it or from it again."""
    w = w + w[j] * g[j]
    w[j] = 0.0
    through = np.outer(g[:, j], g[j])
    denominator = 1 - g[:, j] * g[j]  # 1 - g[a, j] g[j, a], per a
    safe = np.where(denominator > 0, denominator, 1.0)
    g = np.where(denominator[:, None] > 0, (g + through) / safe[:, None], 0.0)
    np.fill_diagonal(g, 0.0)
    g[j], g[:, j] = 0.0, 0.0
    return w, g


# the most hypotheses graphical_simes tests with Simes tests: it enumerates 2^m intersections (0.1 s at 12,
# two label noise levels of five methods and the pooled fit; half a minute at 18), so a larger family
# takes the Bonferroni graph (``graphical``), whose rejections the Simes graph's include
SIMES_MOST = 12


def graphical_simes(p_values, weights, transitions, level: float = SIGNIFICANCE) -> tuple[np.ndarray, np.ndarray]:
    """The graphical procedure with weighted Simes tests in place of weighted Bonferroni ones (Bretz,
    Posch, Glimm, Klinglmueller, Maurer and Rohmeyer, Biometrical Journal 2011): (rejected, adjusted
    p-values), in the input order; ``p_values`` one family (m,) or one per row (rows, m), the same graph.

    Closed testing: every intersection J of the hypotheses is tested with the weighted Simes test
    (Benjamini and Hochberg 1997) at the weights the graph gives J (``graphical``'s graph with each
    hypothesis outside J taken out, ``_without``): its p-value is the smallest p_(j) / (the weights of
    J's hypotheses with p at most p_(j)). A hypothesis is rejected when every J that holds it is, its
    adjusted p the largest of those p-values. ``graphical`` is the same with weighted Bonferroni tests
    (the smallest p_j / w_j), so this rejects whatever it rejects, and more when several p-values are
    small together: with equal weights and transitions it is Hommel's procedure, which rejects all m
    once the largest p is at most ``level`` where Holm's asks the smallest for ``level`` / m.

    The price is an assumption: a Simes test holds its level when the tests are positively dependent
    (Sarkar, Annals of Statistics 2008), as one report's direction tests are (the methods' fits share the
    f = 1 cell, the pooled fit holds them all). ``bench/bench_calibration.py`` measures the family-wise
    error where it matters: with no relation, at the least favourable no-relation truths, and with
    methods whose curves differ. A NaN p-value is never rejected (adjusted 1) and counts as 1 in the
    intersections, so its weight passes nothing on. It enumerates 2^m intersections, so a family of more
    than ``SIMES_MOST`` hypotheses is tested with ``graphical`` instead (valid whatever the dependence,
    less powerful): every caller, the report's and the planner's, gets the same answer for the same family."""
    p = np.asarray(p_values, float)
    single = p.ndim == 1
    p = np.atleast_2d(p)
    count = p.shape[1]
    if count > SIMES_MOST:
        rows = [graphical(row, weights, transitions, level) for row in p]
        rejected, adjusted = np.array([r for r, _ in rows]), np.array([a for _, a in rows])
        return (rejected[0], adjusted[0]) if single else (rejected, adjusted)
    untested = np.isnan(p)
    p = np.where(untested, 1.0, p)
    adjusted = np.zeros(p.shape)
    for members, w in _intersections(np.asarray(weights, float), np.asarray(transitions, float).reshape(count, count)):
        weighted = members[w[members] > 0]  # a weightless p adds nothing to the sums it sits among
        if weighted.size == 0:
            p_intersection = np.ones(len(p))
        else:
            inside = p[:, weighted]
            order = np.argsort(inside, axis=1, kind="stable")
            held = np.cumsum(w[weighted][order], axis=1)  # ties: the last of equal p holds them all, and is the min
            p_intersection = np.minimum((np.take_along_axis(inside, order, 1) / held).min(1), 1.0)
        adjusted[:, members] = np.maximum(adjusted[:, members], p_intersection[:, None])
    adjusted[untested] = 1.0
    rejected = (adjusted <= level) & ~untested
    return (rejected[0], adjusted[0]) if single else (rejected, adjusted)


def _intersections(w: np.ndarray, g: np.ndarray, start: int = 0, members: tuple[int, ...] | None = None):
    """(members, weights) of every non-empty intersection of the graph's hypotheses, each once: the
    hypotheses are taken out in increasing order (the weights do not depend on the order, Bretz et al.
    2009), depth first, so only one path of graphs is held at a time."""
    members = tuple(range(len(w))) if members is None else members
    yield np.array(members, int), w
    for j in members:
        if j >= start and len(members) > 1:
            w_j, g_j = _without(j, w, g)
            yield from _intersections(w_j, g_j, j + 1, tuple(k for k in members if k != j))


def t_quantile(df: float) -> float:
    return float(sps.t.ppf(1 - (1 - LEVEL) / 2, max(df, 1.0)))


CUBIC_MIN_DISTINCT = 5  # distinct alphas from which a cell's accuracy curve is a cubic (see polynomial_prediction)


def prediction_degree(distinct: int) -> int:
    """The degree of a cell's accuracy curve in alpha (``polynomial_prediction``) with this many distinct alphas."""
    return 3 if distinct >= CUBIC_MIN_DISTINCT else 2


def polynomial_prediction(u: np.ndarray, y: np.ndarray, at: list[float]):
    """Least-squares polynomial in alpha through (u, y): predictions at ``at`` and the unscaled covariance
    of those predictions (multiply by sigma^2). A cubic from CUBIC_MIN_DISTINCT distinct alphas, else a
    quadratic (3-4): a peak need not be symmetric, and a quadratic through a peak three times steeper
    on one side, or sharper at its top than a parabola, misstates its height and its fall to alpha = 0 by
    up to a point, far beyond the interval of a mean over cells; the cubic's bias stays within 0.2 points
    on simulated sweeps, at about 30 % more standard error (analysis/CALIBRATION.md, peaks of other shapes). Two distinct alphas: the
    mean of the alpha nearest each point (a measurement); one: only at that alpha. Returns (values, cov, kind)."""
    at = np.asarray(at, float)
    distinct = np.unique(np.round(u, 9))
    if len(distinct) >= 3:
        degree = prediction_degree(len(distinct))
        design = np.stack([u**d for d in range(degree + 1)], 1)
        inv = np.linalg.pinv(design.T @ design)
        coef = inv @ design.T @ y
        rows = np.stack([at**d for d in range(degree + 1)], 1)
        return rows @ coef, rows @ inv @ rows.T, "model"
    values, groups = [], []
    for a in at:
        nearest = distinct[np.argmin(np.abs(distinct - a))]
        if len(distinct) == 1 and abs(nearest - a) > 1e-9:
            values.append(np.nan)
            groups.append(None)
            continue
        pick = np.abs(np.round(u, 9) - nearest) < 1e-9
        values.append(float(y[pick].mean()))
        groups.append((nearest, int(pick.sum())))
    cov = np.zeros((len(at), len(at)))
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            if gi is not None and gj is not None and gi[0] == gj[0]:
                cov[i, j] = 1.0 / gi[1]
            elif gi is None or gj is None:
                cov[i, j] = np.nan
    return np.array(values), cov, "measured"
