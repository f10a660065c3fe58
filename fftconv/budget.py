"""The workspace-budget search: the one place that sizes work to ``max_workspace_bytes``.

Every algorithm splits its work by one free parameter, its *partition*: the
samples per pass (a batch chunk) or the output samples per tile.  These
searches find the partition that fits a budget; the algorithm supplies how
many bytes a partition needs and, for tiles, what it costs.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Tuple

Tile = Tuple[int, ...]


def too_small(func: str, budget: int, subject: str, needed: int, kind: str = "") -> ValueError:
    """The error for a budget that not even the smallest partition fits:
    ``"<subject> needs <needed> bytes of <kind> workspace"``."""
    kind = f"{kind} " if kind else ""
    return ValueError(f"{func}: max_workspace_bytes={budget} is too small: {subject} needs "
                      f"{needed} bytes of {kind}workspace")


def largest_chunk(func: str, batch: int, budget: Optional[int],
                  bytes_of: Callable[[int], int], what: str) -> int:
    """Largest number of samples per pass whose workspace ``bytes_of(chunk)`` fits
    in ``budget`` bytes (the whole batch without a budget); ``what`` names the
    workspace in the error when one sample does not fit."""
    if budget is None or batch == 0 or bytes_of(batch) <= budget:
        return batch
    one = bytes_of(1)
    if one > budget:
        raise too_small(func, budget, "one sample", one, what)
    lo, hi = 1, batch  # workspace grows with the chunk: bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if bytes_of(mid) <= budget else (lo, mid - 1)
    return lo


def fitting_tile(func: str, budget: Optional[int], preferred: Tile, candidates: Iterable[Tile],
                 bytes_of: Callable[[Tile], int], seconds_of: Callable[[Tile], float],
                 what: str) -> Tile:
    """``preferred`` if its workspace fits ``budget``, else the cheapest of
    ``candidates`` that fits; an error naming ``preferred`` when none does."""
    def fits(tile: Sequence[int]) -> bool:
        return budget is None or bytes_of(tuple(tile)) <= budget
    if fits(preferred):
        return preferred
    fitting = [tuple(t) for t in candidates if fits(t)]
    if fitting:
        return min(fitting, key=seconds_of)
    assert budget is not None  # fits() is true without a budget
    raise too_small(func, budget, f"{what} with tile={preferred}", bytes_of(preferred))
