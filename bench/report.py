"""Plain-text tables and the crossover plot.

Tables are built as lists of string cells and laid out by :func:`table`
(first column left-aligned, the others right-aligned).  Missing values print
as ``-``; skipped competitors as ``skip`` with a note under the table.
"""
from __future__ import annotations

from math import floor, log, log10
from typing import List, Optional, Sequence

from .competitors import COMPETITORS, Outputs

#: (numerator, denominator) of the ratio columns of the main table.
RATIOS = (("fft", "floor"), ("direct", "fft"), ("torch", "fft"), ("scipy", "fft"))


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


def _time_cell(result, key: str) -> str:
    return "skip" if key in result.skipped else fmt_ms(result.seconds.get(key))


def _checked(keys: Sequence[str]) -> List[str]:
    """The competitors among ``keys`` whose outputs are compared with the FFT path's."""
    return [k for k in keys if COMPETITORS[k].checked and k != "fft"]


def _megabytes(nbytes: Optional[int]) -> str:
    return fmt(None if nbytes is None else nbytes / 2 ** 20, ".1f")


def results_table(results, keys: Sequence[str], memory: bool = True) -> str:
    """Times (ms), ratios, max relative errors and FFT-path peak memory per case."""
    checked = _checked(keys)
    ratios = [(n, d) for n, d in RATIOS if n in keys and d in keys]
    headers = (["case"] + [f"{k} ms" for k in keys] + [f"{n}/{d}" for n, d in ratios]
               + [f"err {k}" for k in checked] + (["peak MB"] if memory else []))
    rows = []
    for r in results:
        rows.append([r.case.name] + [_time_cell(r, k) for k in keys]
                    + [fmt(r.ratio(n, d), ".2f") for n, d in ratios]
                    + [fmt(r.max_error(k), ".1e") for k in checked]
                    + ([_megabytes(r.peak_bytes)] if memory else []))
    return table(headers, rows)


def errors_table(results, keys: Sequence[str]) -> str:
    """Relative error of ``y``, ``dx`` and ``dw`` per checked competitor and case."""
    pairs = [(k, a) for k in _checked(keys) for a in Outputs._fields]
    headers = ["case"] + [f"{k} {a}" for k, a in pairs]
    rows = [[r.case.name] + [fmt(r.errors.get(k, {}).get(a), ".1e") for k, a in pairs]
            for r in results]
    return table(headers, rows)


def skip_notes(results, limits) -> List[str]:
    """One line per skipped run: ``case: direct skipped (est. >45s, limit 20s; --full runs it)``."""
    return [f"{r.case.name}: {key} skipped (est. >{est:.0f}s per step, limit "
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


def plot_sweep(results, path: str, title: str) -> str:
    """Time per training step against kernel size (log y), crossovers marked.

    Returns the path of the PNG written.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r.case.kernel_size for r in results]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"fft": ("C0", "o"), "direct": ("C1", "s"), "torch": ("C2", "^")}
    for key, (color, marker) in styles.items():
        ms = [r.seconds[key] * 1e3 if key in r.seconds else None for r in results]
        points = [(k, t) for k, t in zip(ks, ms) if t is not None]
        if points:
            ax.plot(*zip(*points), marker=marker, color=color, label=COMPETITORS[key].title)
        if key != "fft" and points:
            _mark_crossover(ax, sweep_crossover(results, key), ks[0], key, color)
    ax.set_yscale("log")
    ax.set_xticks(ks)
    ax.set_xlabel("kernel size k (k x k)")
    ax.set_ylabel("ms per training step (forward + backward)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
