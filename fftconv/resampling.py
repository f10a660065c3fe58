"""Stride and dilation as spectrum identities, so neither pays for zeros.

For a grid of ``L = f * M`` samples on one axis:

* *zero-upsampling* by ``f`` (``u[i*f] = v[i]``, zeros between) repeats the
  spectrum: ``U[k] = V[k mod M]``, where ``V`` is the length-``M`` DFT of ``v``
  (:func:`tile`);
* *decimation* by ``f`` (``z[i] = y[i*f]``) folds it:
  ``Z[k] = (1/f) * sum_r Y[k + r*M]``, the length-``M`` DFT of ``z``
  (:func:`fold`).

The frequency axes of a spectrum are ``axis0, axis0 + 1, ...`` (batch-major
spectra have them last, frequency-major ones first).  For real signals the
last frequency axis holds only ``L//2 + 1`` bins; the others follow from
Hermitian symmetry ``Y[L - k] = conj(Y[k])``, which both functions use through
:func:`_full_bins`.
"""
from __future__ import annotations

from typing import List

from .backends import Arrays


def _full_bins(a: Arrays, spec, axis: int, full_len: int, bins: List[int],
               half: bool, axis0: int):
    """Bins ``bins`` (in ``0..full_len-1``) of ``spec`` along ``axis``.

    With ``half``, ``axis`` is the last of the frequency axes ``axis0..axis``
    of a real signal's spectrum, which holds only bins ``0..full_len//2``: bin ``k`` above that is
    ``conj`` of bin ``full_len - k`` *at the negated frequency on every other
    axis* (``Y[-k0, -k1] = conj(Y[k0, k1])``).
    """
    if not half:
        return a.take(spec, bins, axis=axis)
    mirrored = [b > full_len // 2 for b in bins]
    out = a.take(spec, [full_len - b if m else b for b, m in zip(bins, mirrored)], axis=axis)
    if not any(mirrored):
        return out
    flipped = out
    for other in range(axis0, axis):
        n = flipped.shape[other]
        flipped = a.take(flipped, [-i % n for i in range(n)], axis=other)
    shape = [1] * out.ndim
    shape[axis] = len(bins)
    mask = a.constant(("mirrored", tuple(mirrored), tuple(shape)),
                      lambda: a.reshape(a.asarray(mirrored), shape))
    return a.xp.where(mask, a.conj(flipped), out)


def _changed_axes(coarse, fine, real: bool, axis0: int):
    """``(axis, coarse length, fine length, half)`` for every axis whose grids differ;
    ``half`` marks the halved last axis of a real signal's spectrum."""
    last = axis0 + len(coarse) - 1
    for axis, (m, n) in enumerate(zip(coarse, fine), start=axis0):
        if m != n:
            yield axis, m, n, real and axis == last


def tile(a: Arrays, spec, coarse, fine, real: bool, axis0: int):
    """Spectrum on grid ``fine`` of a signal zero-upsampled from grid ``coarse``."""
    for axis, m, n, half in _changed_axes(coarse, fine, real, axis0):
        bins = [k % m for k in range(n // 2 + 1 if half else n)]
        spec = _full_bins(a, spec, axis, m, bins, half, axis0)
    return spec


def fold(a: Arrays, spec, fine, coarse, real: bool, axis0: int):
    """Spectrum on grid ``coarse`` of the signal of ``spec`` decimated to ``coarse``."""
    for axis, m, n, half in _changed_axes(coarse, fine, real, axis0):
        if not half:
            shape = spec.shape
            spec = a.mean(a.reshape(spec, shape[:axis] + (n // m, m) + shape[axis + 1:]),
                          axis=axis)
            continue
        target = list(range(m // 2 + 1))
        total = _full_bins(a, spec, axis, n, target, half, axis0)
        for r in range(1, n // m):
            total += _full_bins(a, spec, axis, n, [t + r * m for t in target], half, axis0)
        spec = total / (n // m)
    return spec
