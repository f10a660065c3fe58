"""The workspace-budget search: the one place that sizes work to ``max_workspace_bytes``.

Every algorithm splits its work by one free parameter, its *partition*: the
samples per pass (a batch chunk), the output samples per tile and the tiles
run per pass, or the groups per pass of a grouped layer.  These searches find the partition that fits a budget; the
algorithm supplies how many bytes a partition needs and, for tiles, what it
costs.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple

Tile = Tuple[int, ...]


def too_small(func: str, budget: int, subject: str, needed: int, kind: str = "") -> ValueError:
    """The error for a budget that not even the smallest partition fits:
    ``"<subject> needs <needed> bytes of <kind> workspace"``."""
    kind = f"{kind} " if kind else ""
    return ValueError(f"{func}: max_workspace_bytes={budget} is too small: {subject} needs "
                      f"{needed} bytes of {kind}workspace")


def most_that_fit(most: int, budget: Optional[int], bytes_of: Callable[[int], int]) -> int:
    """The largest ``n <= most`` whose ``bytes_of(n)`` fits in ``budget`` bytes (``most``
    without a budget), or 0 when not even ``n = 1`` fits; ``bytes_of`` grows with ``n``."""
    if budget is None or most == 0 or bytes_of(most) <= budget:
        return most
    if bytes_of(1) > budget:
        return 0
    lo, hi = 1, most
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if bytes_of(mid) <= budget else (lo, mid - 1)
    return lo


def largest_chunk(func: str, batch: int, budget: Optional[int],
                  bytes_of: Callable[[int], int], what: str) -> int:
    """Largest number of samples per pass whose workspace ``bytes_of(chunk)`` fits
    in ``budget`` bytes (the whole batch without a budget); ``what`` names the
    workspace in the error when one sample does not fit."""
    chunk = most_that_fit(batch, budget, bytes_of)
    if chunk == 0 and budget is not None:
        raise too_small(func, budget, "one sample", bytes_of(1), what)
    return chunk


def fitting_tiling(func: str, budget: Optional[int], preferred: Tile, candidates: Iterable[Tile],
                   per_pass: Callable[[Tile], int], bytes_of: Callable[[Tile, int], int],
                   seconds_of: Callable[[Tile, int], float], what: str) -> Tuple[Tile, int]:
    """``(tile, tiles per pass)`` under ``budget``: ``preferred`` with the most tiles
    per pass, up to ``per_pass(tile)``, whose workspace ``bytes_of(tile, n)`` fits;
    when not even one of its tiles per pass fits, the cheapest by ``seconds_of`` of
    ``candidates`` that fit.  When none fits, the error names the smallest pass
    (one tile of ``preferred`` or of a candidate)."""
    def fitted(tile: Tile) -> Tuple[Tile, int]:
        return tile, most_that_fit(per_pass(tile), budget, lambda n: bytes_of(tile, n))
    best = fitted(preferred)
    if best[1]:
        return best
    tiles = [tuple(t) for t in candidates]
    fitting = [t for t in map(fitted, tiles) if t[1]]
    if fitting:
        return min(fitting, key=lambda t: seconds_of(*t))
    if budget is None:  # pragma: no cover - everything fits without a budget
        raise RuntimeError("fitting_tiling: nothing fits without a budget")
    needed, smallest = min((bytes_of(t, 1), t) for t in [preferred] + tiles)
    raise too_small(func, budget, f"{what} with tile={smallest} and one tile per pass", needed)
