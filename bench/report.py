"""Plain-text tables and the crossover plot.

Tables are built as lists of string cells and laid out by :func:`table`
(first column left-aligned, the others right-aligned).  Missing values print
as ``-``; skipped competitors as ``skip`` with a note under the table; a time
whose samples spread out (``bench.timing.spread_out``) as ``12.3*``, with
:func:`outlier_notes` under the table.
"""
from __future__ import annotations

from math import floor, log, log10
from textwrap import fill
from typing import List, Optional, Sequence

from .competitors import BEST, COMPETITORS, OWN
from .timing import OUTLIER

#: (numerator, denominator) of the ratio columns of the main table.
RATIOS = (("fft", "floor"), ("direct", "fft"), ("torch", "fft"), ("scipy", "fft"),
          ("auto", BEST))
#: Rivals whose crossover with the FFT path the kernel sweep reports.
CROSSOVER_RIVALS = ("direct", "torch")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned plain-text table with a rule under the header."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def fmt_ms(seconds: Optional[float]) -> str:
    """Milliseconds to three significant digits (at least the integer part)."""
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.{max(2 - int(floor(log10(ms))), 0) if ms > 0 else 0}f}"


#: Appended to a time whose samples spread out (:func:`outlier_notes` says what it means).
OUTLIER_MARK = "*"


def _time_cell(result, key: str) -> str:
    if key in result.skipped:
        return "skip"
    return fmt_ms(result.seconds.get(key)) + (OUTLIER_MARK if key in result.spread else "")


def outlier_notes(results) -> List[str]:
    """The footnote of the times marked :data:`OUTLIER_MARK`, or none if none is."""
    flagged = [(ratio, f"{r.case.name} {key}") for r in results
               for key, ratio in r.spread.items()]
    if not flagged:
        return []
    ratio, worst = max(flagged)
    return [f"{OUTLIER_MARK} samples spread out: the slowest took more than {OUTLIER:g}x the "
            f"best (other work or a descheduled thread stalled it; {len(flagged)} marked, the "
            f"widest {worst} at {ratio:.1f}x); the figure is the best sample, never a stalled "
            f"one, but rerun on a quiet machine to trust it"]


def _checked(keys: Sequence[str]) -> List[str]:
    """The competitors among ``keys`` whose outputs are compared with the FFT path's."""
    return [k for k in keys if COMPETITORS[k].checked and k != "fft"]


def _megabytes(nbytes: Optional[int]) -> str:
    return fmt(None if nbytes is None else nbytes / 2 ** 20, ".1f")


def _results_columns(results, keys: Sequence[str], memory: bool):
    """``(ratios, traced, chose)``: the ratio pairs, the memory columns and whether
    auto's pick is shown, for :func:`results_table` and :func:`results_legend`."""
    ratios = [(n, d) for n, d in RATIOS if n in keys and (d in keys or d == BEST)]
    traced = [k for k in keys if COMPETITORS[k].traced] if memory else []
    return ratios, traced, any(r.choice for r in results)


def results_table(results, keys: Sequence[str], memory: bool = True) -> str:
    """Times (ms), auto's pick, ratios and peak traced memory (MB) per case
    (:func:`results_legend` explains each column)."""
    ratios, traced, chose = _results_columns(results, keys, memory)
    headers = (["case"] + [f"{k} ms" for k in keys] + (["auto chose"] if chose else [])
               + [f"{n}/{d}" for n, d in ratios] + (["pick/best"] if chose else [])
               + [f"{k} MB" for k in traced])
    rows = [[r.case.name] + [_time_cell(r, k) for k in keys] + ([r.choice or "-"] if chose else [])
            + [fmt(r.ratio(n, d), ".2f") for n, d in ratios]
            + ([fmt(r.slowdown(), ".2f")] if chose else [])
            + [_megabytes(r.peak_bytes.get(k)) for k in traced]
            for r in results]
    return table(headers, rows)


#: What each ratio column of the main table means.
RATIO_MEANINGS = {
    "fft/floor": "the FFT path over the six bare transforms it needs (1 = the floor)",
    "auto/best": "auto over the fastest of fftconv's own algorithms in this case",
}


def results_legend(results, keys: Sequence[str], memory: bool = True) -> List[str]:
    """One plain line per column of :func:`results_table`."""
    ratios, traced, chose = _results_columns(results, keys, memory)
    lines = [f"{k + ' ms':<16} best ms per training step (forward + backward): "
             f"{COMPETITORS[k].title}" for k in keys]
    lines.append(f"{'(' + OUTLIER_MARK + ')':<16} after a time: its samples spread out "
                 f"(slowest > {OUTLIER:g}x best), see the note under the table")
    if chose:
        lines.append(f"{'auto chose':<16} the algorithm auto picked (cost model, or measured "
                     f"with FFTCONV_MEASURE=1)")
    for n, d in ratios:
        meaning = RATIO_MEANINGS.get(f"{n}/{d}", f"{n} over fft: > 1 means fft is faster")
        lines.append(f"{n + '/' + d:<16} {meaning}")
    if chose:
        lines.append(f"{'pick/best':<16} auto's pick, from its own column, over the same "
                     f"fastest (1: the pick was the fastest; auto/best above it is noise)")
    lines += [f"{k + ' MB':<16} peak traced memory of one {k} step on a fresh plan"
              for k in traced]
    return lines


def errors_table(results, keys: Sequence[str]) -> str:
    """Largest relative error of ``y``, ``dx`` and ``dw`` per checked competitor and case."""
    checked = _checked(keys)
    rows = [[r.case.name] + [fmt(r.max_error(k), ".1e") for k in checked] for r in results]
    return table(["case"] + checked, rows)


def decisions_table(results) -> str:
    """Per case: times of fftconv's algorithms, the model's pick, the fastest, the cost."""
    headers = ["case"] + [f"{k} ms" for k in OWN] + ["model", "fastest", "agree", "slowdown"]
    rows = [[r.case.name] + [_time_cell(r, k) for k in OWN]
            + [r.choice or "-", r.fastest_own() or "-",
               "yes" if r.choice == r.fastest_own() else "NO", fmt(r.slowdown(), ".2f")]
            for r in results]
    return table(headers, rows)


def decisions_summary(summary, target: float, close: float,
                      slowdown_target: float = 1.2) -> List[str]:
    """The agreement of the model with the measurements, in a few lines; the worst
    slowdown against ``slowdown_target``."""
    if not summary.cases:
        return ["no case measured"]
    lines = [f"model picked the measured fastest in {summary.agreed} of {summary.cases} cases "
             f"({summary.fraction:.0%}; target >= {target:.0%}: "
             f"{'yes' if summary.met else 'NO'})",
             f"model's pick within {close:g}x of the fastest in {summary.close} of "
             f"{summary.cases} cases"]
    worst = summary.worst_result
    if worst is not None and summary.worst > 1:
        lines.append(f"worst slowdown {summary.worst:.2f}x at {worst.case.name} (picked "
                     f"{worst.choice}, fastest {worst.fastest_own()}; target <= "
                     f"{slowdown_target:g}: {'yes' if summary.worst <= slowdown_target else 'NO'})")
    else:
        lines.append("worst slowdown 1.00x (every pick was the fastest)")
    return lines


def skip_notes(results, limits) -> List[str]:
    """One line per skipped run: ``case: direct skipped (est. >45s, limit 20s; --full runs it)``,
    or ``case: scipy not run (no equivalent of this layer)`` (an infinite estimate)."""
    return [f"{r.case.name}: {key} not run (no equivalent of this layer)" if est == float("inf")
            else f"{r.case.name}: {key} skipped (est. >{est:.0f}s per step, limit "
                 f"{limits[key]:.0f}s; --full runs it)"
            for r in results for key, est in r.skipped.items()]


def targets_table(checks) -> str:
    """The performance targets: figure, case, measured ratio, requirement, verdict."""
    rows = [[c.target.figure, c.case_name, fmt(c.ratio, ".2f"), c.target.requirement, c.verdict]
            for c in checks]
    return table(["figure", "case", "measured", "target", "met?"], rows)


def errors_above(results, tolerance: float) -> List[str]:
    """``case: key array error`` for every relative error above ``tolerance``."""
    return [f"{r.case.name}: {key} {a} relative error {e:.1e} > {tolerance:.0e}"
            for r in results for key, errs in r.errors.items() for a, e in errs.items()
            if not e <= tolerance]


# -- the crossover plot -------------------------------------------------------------------------
def crossover(ks: Sequence[int], slow: Sequence[Optional[float]],
              fast: Sequence[Optional[float]]) -> Optional[float]:
    """Kernel size from which ``fast`` stays cheaper than ``slow``.

    The last sign change of ``log(slow / fast)`` from <= 0 to > 0, interpolated
    linearly between its two kernel sizes (a noisy point earlier in the sweep
    does not move it).  Returns ``ks[0]`` if ``fast`` wins at every point and
    None if it loses at the last one.  Points with a missing time are dropped.
    """
    points = [(k, log(s / f)) for k, s, f in zip(ks, slow, fast) if s and f]
    if not points or points[-1][1] <= 0:
        return None
    i = len(points) - 1
    while i > 0 and points[i - 1][1] > 0:
        i -= 1
    if i == 0:
        return float(points[0][0])
    (k0, gain0), (k1, gain1) = points[i - 1], points[i]
    return k0 + (k1 - k0) * (-gain0) / (gain1 - gain0)


def sweep_crossover(results, rival: str) -> Optional[float]:
    """:func:`crossover` of the FFT path against ``rival`` over a kernel sweep."""
    return crossover([r.case.kernel_size for r in results],
                     [r.seconds.get(rival) for r in results],
                     [r.seconds.get("fft") for r in results])


def crossover_text(results, rival: str) -> str:
    """E.g. ``"fft overtakes direct at k ~ 4.2"`` for a kernel sweep."""
    ks = [r.case.kernel_size for r in results]
    k = sweep_crossover(results, rival)
    if k is None:
        return f"fft is not faster than {rival} at k = {ks[-1]}"
    if k == ks[0]:
        return f"fft is faster than {rival} from k = {ks[0]}"
    return f"fft overtakes {rival} at k ~ {k:.1f}"


#: Colour and marker of each curve of the crossover plot.
PLOT_STYLES = {"fft": ("C0", "o"), "direct": ("C1", "s"), "overlap_add": ("C3", "D"),
               "torch": ("C2", "^")}


def plot_sweep(results, path: str, title: str, warning: str = "") -> str:
    """Time per training step against kernel size (log y), crossovers and the
    cost model's pick at each kernel size marked.

    Each line is the best (minimum) step time; a shaded band reaches up to the
    median of the same samples, so a point that moved under load shows as a
    wide band.  A non-empty ``warning`` (the machine was busy) is written on
    the plot itself.  Returns the path of the PNG written.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r.case.kernel_size for r in results]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, (color, marker) in PLOT_STYLES.items():
        points = [(r.case.kernel_size, r.seconds[key] * 1e3) for r in results if key in r.seconds]
        if points:
            ax.plot(*zip(*points), marker=marker, color=color, label=COMPETITORS[key].title)
            medians = [r.medians.get(key, r.seconds[key]) * 1e3 for r in results
                       if key in r.seconds]
            ax.fill_between([k for k, _ in points], [t for _, t in points], medians,
                            color=color, alpha=0.2, linewidth=0)
        if key in CROSSOVER_RIVALS and points:
            _mark_crossover(ax, sweep_crossover(results, key), ks[0], key, color)
    _mark_choices(ax, results)
    ax.set_yscale("log")
    ax.set_xticks(ks)
    ax.set_xlabel("kernel size k (k x k)")
    ax.set_ylabel("ms per training step (forward + backward)")
    ax.set_title(title)
    ax.annotate("lines: best of the samples; bands: up to their median", (0.01, 0.01),
                xycoords="axes fraction", fontsize=7, color="0.4")
    if warning:
        ax.annotate(fill(warning, 70), (0.5, 0.5), xycoords="axes fraction", ha="center",
                    va="center", fontsize=9, color="red", alpha=0.8,
                    bbox=dict(facecolor="white", edgecolor="red", alpha=0.7))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _mark_choices(ax, results):
    """A black ring around the point of the algorithm ``auto`` picks at each k."""
    points = [(r.case.kernel_size, r.seconds[r.choice] * 1e3) for r in results
              if r.choice in r.seconds]
    if points:
        ax.scatter(*zip(*points), s=180, facecolors="none", edgecolors="black",
                   linewidths=1.5, zorder=3, label="auto's pick (cost model)")


def _mark_crossover(ax, k: Optional[float], first: int, rival: str, color: str):
    """A dashed vertical line at ``k``, where the FFT path overtakes ``rival``."""
    if k is None:
        return
    if k > first:
        ax.axvline(k, color=color, linestyle="--", alpha=0.7)
        label, x = f"FFT < {rival}\nk ~ {k:.1f}", k
    else:
        label, x = f"FFT < {rival} at every k", first
    ax.annotate(label, (x, 0.95), xycoords=("data", "axes fraction"), ha="left", va="top",
                fontsize=8, color=color, xytext=(3, 0), textcoords="offset points")
