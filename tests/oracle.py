"""A deliberately simple reference for fftconv (in the spirit of JAX's ``lax_reference.py``).

It shares no code with the engine: it must never import ``fftconv``. Everything is computed in
float64 / complex128 by padding with ``np.pad`` and looping over the kernel offsets
(``np.ndindex`` over the kernel shape), contracting channels with ``np.tensordot`` group by group.

Semantics follow /work/shared/CONVENTIONS.md:

* forward (cross-correlation, exactly torch.nn.functional.convNd, no conjugation)::

      y[n, o, i] = b[o] + sum_c sum_j w[o, c, j] * xpad[n, g(o)*C_g + c, i*s + j*d]

* ``flip_kernel=True`` flips ``w`` along every spatial axis (a true convolution).
* backward is the exact adjoint (PyTorch complex convention: gradient w.r.t. the conjugate):
  ``dx`` uses ``conj(w)``, ``dw`` uses ``conj(x)``, ``db = sum(dy)``; sums over the batch.
"""

from collections import namedtuple
from numbers import Integral

import numpy as np

Grads = namedtuple("Grads", ["dx", "dw", "db"])


# ----------------------------------------------------------------------------------------------
# integer geometry (CONVENTIONS section 2), written independently of the engine
# ----------------------------------------------------------------------------------------------

def _per_axis(value, nd, name):
    if isinstance(value, Integral):
        return (int(value),) * nd
    value = tuple(int(v) for v in value)
    if len(value) != nd:
        raise ValueError(f"oracle: {name} needs {nd} entries, got {value}")
    return value


def effective_kernel(k, d):
    return d * (k - 1) + 1


def resolve_padding(padding, in_spatial, kernel, stride=1, dilation=1, flip_kernel=False):
    """Return a list of ``(lo, hi)`` pairs, one per spatial axis, per CONVENTIONS section 2."""
    nd = len(in_spatial)
    s = _per_axis(stride, nd, "stride")
    d = _per_axis(dilation, nd, "dilation")
    ke = [effective_kernel(k, dd) for k, dd in zip(kernel, d)]
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * nd
        if padding == "full":
            return [(e - 1, e - 1) for e in ke]
        if padding == "same":
            pads = []
            for n, ss, e in zip(in_spatial, s, ke):
                out = -(-n // ss)  # ceil(n / s)
                total = max((out - 1) * ss + e - n, 0)
                lo = total - total // 2 if flip_kernel else total // 2
                pads.append((lo, total - lo))
            return pads
        raise ValueError(f"oracle: unknown padding {padding!r}")
    if isinstance(padding, Integral):
        return [(int(padding), int(padding))] * nd
    padding = list(padding)
    if len(padding) != nd:
        raise ValueError(f"oracle: padding needs {nd} entries, got {padding}")
    pads = []
    for p in padding:
        if isinstance(p, Integral):
            pads.append((int(p), int(p)))
        else:
            lo, hi = p
            pads.append((int(lo), int(hi)))
    return pads


def output_spatial(in_spatial, kernel, padding="valid", stride=1, dilation=1, flip_kernel=False):
    """``out = (n + lo + hi - ke) // s + 1`` per axis; raises ValueError if any ``out < 1``."""
    nd = len(in_spatial)
    s = _per_axis(stride, nd, "stride")
    d = _per_axis(dilation, nd, "dilation")
    pads = resolve_padding(padding, in_spatial, kernel, s, d, flip_kernel)
    out = []
    for n, k, ss, dd, (lo, hi) in zip(in_spatial, kernel, s, d, pads):
        o = (n + lo + hi - effective_kernel(k, dd)) // ss + 1
        if o < 1:
            raise ValueError(f"oracle: empty output (out={o}) on an axis")
        out.append(o)
    return tuple(out)


def output_shape(x_shape, w_shape, padding="valid", stride=1, dilation=1, groups=1,
                 flip_kernel=False):
    return (x_shape[0], w_shape[0]) + output_spatial(
        tuple(x_shape[2:]), tuple(w_shape[2:]), padding, stride, dilation, flip_kernel)


# ----------------------------------------------------------------------------------------------
# loops
# ----------------------------------------------------------------------------------------------

def _work_dtype(*arrays):
    if any(a is not None and np.iscomplexobj(a) for a in arrays):
        return np.complex128
    return np.float64


def _flip(w):
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]


def _setup(x_shape, w, padding, stride, dilation, groups, flip_kernel):
    nd = len(x_shape) - 2
    if w.ndim != nd + 2:
        raise ValueError("oracle: x and w need the same number of spatial axes")
    n_batch, c_in = x_shape[:2]
    c_out, c_g = w.shape[:2]
    if c_in % groups or c_out % groups or c_in // groups != c_g:
        raise ValueError("oracle: inconsistent groups / channels")
    s = _per_axis(stride, nd, "stride")
    d = _per_axis(dilation, nd, "dilation")
    kernel = w.shape[2:]
    pads = resolve_padding(padding, x_shape[2:], kernel, s, d, flip_kernel)
    out = output_spatial(x_shape[2:], kernel, pads, s, d, flip_kernel)
    return nd, s, d, pads, out, c_g, c_out // groups


def _window(j, s, d, out):
    """Spatial slices of ``xpad`` that kernel offset ``j`` touches."""
    return tuple(slice(jj * dd, jj * dd + (o - 1) * ss + 1, ss)
                 for jj, ss, dd, o in zip(j, s, d, out))


def oracle_forward(x, w, b=None, padding="valid", stride=1, dilation=1, groups=1,
                   flip_kernel=False):
    dt = _work_dtype(x, w, b)
    x = np.asarray(x).astype(dt)
    w = np.asarray(w).astype(dt)
    nd, s, d, pads, out, c_g, o_g = _setup(x.shape, w, padding, stride, dilation, groups,
                                           flip_kernel)
    if flip_kernel:
        w = _flip(w)
    xpad = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    n_batch, c_out = x.shape[0], w.shape[0]
    y = np.zeros((n_batch, c_out) + out, dtype=dt)
    ch = (slice(None), slice(None))
    for j in np.ndindex(*w.shape[2:]):
        win = xpad[ch + _window(j, s, d, out)]
        for g in range(groups):
            wo = slice(g * o_g, (g + 1) * o_g)
            xc = slice(g * c_g, (g + 1) * c_g)
            # sum over c of w[o, c, j] * window[n, c, ...]  (tensordot puts o last)
            y[:, wo] += np.moveaxis(
                np.tensordot(win[:, xc], w[(wo, slice(None)) + j], axes=([1], [1])), -1, 1)
    if b is not None:
        b = np.asarray(b).astype(dt)
        y += b.reshape((1, c_out) + (1,) * nd)
    return y


def oracle_backward(dy, x, w, padding="valid", stride=1, dilation=1, groups=1,
                    flip_kernel=False):
    """Explicit adjoint loops: scatter-add over kernel offsets for dx, correlation for dw."""
    dt = _work_dtype(dy, x, w)
    dy = np.asarray(dy).astype(dt)
    x = np.asarray(x).astype(dt)
    w = np.asarray(w).astype(dt)
    nd, s, d, pads, out, c_g, o_g = _setup(x.shape, w, padding, stride, dilation, groups,
                                           flip_kernel)
    if dy.shape != (x.shape[0], w.shape[0]) + out:
        raise ValueError(f"oracle: dy has shape {dy.shape}, expected "
                         f"{(x.shape[0], w.shape[0]) + out}")
    w_eff = _flip(w) if flip_kernel else w
    xpad = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w_eff)
    ch = (slice(None), slice(None))
    for j in np.ndindex(*w.shape[2:]):
        sl = _window(j, s, d, out)
        win = xpad[ch + sl]
        for g in range(groups):
            wo = slice(g * o_g, (g + 1) * o_g)
            xc = slice(g * c_g, (g + 1) * c_g)
            # dx: scatter dy back through conj(w) into the window this offset read from
            dxpad[(slice(None), xc) + sl] += np.moveaxis(
                np.tensordot(dy[:, wo], np.conj(w_eff[(wo, slice(None)) + j]), axes=([1], [0])),
                -1, 1)
            # dw: correlate dy with conj(x) over batch and output positions
            red = [0] + list(range(2, dy.ndim))
            dw[(wo, slice(None)) + j] = np.tensordot(dy[:, wo], np.conj(win[:, xc]),
                                                     axes=(red, red))
    crop = ch + tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, x.shape[2:]))
    dx = dxpad[crop]
    if flip_kernel:
        dw = _flip(dw)
    db = dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
    return Grads(np.ascontiguousarray(dx), np.ascontiguousarray(dw), db)
