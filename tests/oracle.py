"""A deliberately simple reference for fftconv (in the spirit of JAX's ``lax_reference.py``).

It shares no code with the engine: it must never import ``fftconv``. Everything is computed in
float64 / complex128 by padding with ``np.pad`` and looping over the kernel offsets
(``np.ndindex`` over the kernel shape), contracting channels with ``np.tensordot`` group by group.

Semantics follow CONVENTIONS.md (at the repository root):

* forward (cross-correlation, exactly torch.nn.functional.convNd, no conjugation)::

      y[n, o, i] = b[o] + sum_c sum_j w[o, c, j] * xpad[n, g(o)*C_g + c, i*s + j*d]

* ``flip_kernel=True`` flips ``w`` along every spatial axis (a true convolution).
* backward is the exact adjoint (PyTorch complex convention: gradient w.r.t. the conjugate):
  ``dx`` uses ``conj(w)``, ``dw`` uses ``conj(x)``, ``db = sum(dy)``; sums over the batch.
* ``padding_mode`` in {"zeros", "circular", "reflect", "replicate"} (PyTorch's names; np.pad's
  "constant", "wrap", "reflect", "edge"); backward folds the halo back onto the input (the adjoint
  of the padding operator, built from an index map).
* transposed convolution, exactly torch.nn.functional.conv_transpose{1,2,3}d for any number of
  spatial axes, written as a plain scatter (forward) and as gathers (backward).
* channels-last layout helpers: activations ``(N, C, *sp) <-> (N, *sp, C)``, weights
  ``(C_out, C_g, *k) <-> (*k, C_g, C_out)`` (TensorFlow HWIO).
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
    c_in = x_shape[1]
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


# ----------------------------------------------------------------------------------------------
# padding modes (PyTorch's names) and the adjoint of the padding operator
# ----------------------------------------------------------------------------------------------

PADDING_MODES = {"zeros": "constant", "circular": "wrap", "reflect": "reflect",
                 "replicate": "edge"}


def _np_pad_mode(padding_mode):
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"oracle: padding_mode must be one of {sorted(PADDING_MODES)}, "
                         f"got {padding_mode!r}")
    return PADDING_MODES[padding_mode]


def pad_input(x, pads, padding_mode="zeros"):
    """Pad the spatial axes of ``x`` (N, C, *sp) by ``pads`` [(lo, hi), ...], ``padding_mode``."""
    widths = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
    return np.pad(x, widths, mode=_np_pad_mode(padding_mode))


def pad_index_map(n, lo, hi, padding_mode="zeros"):
    """For each of the ``n + lo + hi`` padded positions, the input index it reads (-1: a zero)."""
    idx = np.arange(n)
    if _np_pad_mode(padding_mode) == "constant":
        return np.pad(idx, (lo, hi), mode="constant", constant_values=-1)
    return np.pad(idx, (lo, hi), mode=_np_pad_mode(padding_mode))


def unpad_adjoint(dxpad, in_spatial, pads, padding_mode="zeros"):
    """Adjoint of :func:`pad_input`: scatter-add every padded position onto the input index it read.

    The padding operator is a product of one operator per spatial axis, so its adjoint is applied
    one axis at a time with ``np.add.at``.
    """
    out = dxpad
    for ax, (n, (lo, hi)) in enumerate(zip(in_spatial, pads)):
        axis = 2 + ax
        idx = pad_index_map(n, lo, hi, padding_mode)
        if out.shape[axis] != idx.size:
            raise ValueError("oracle: padded array does not match the padding")
        keep = idx >= 0
        src = np.moveaxis(out, axis, 0)[keep]
        acc = np.zeros((n,) + src.shape[1:], dtype=out.dtype)
        np.add.at(acc, idx[keep], src)
        out = np.moveaxis(acc, 0, axis)
    return out


def oracle_forward(x, w, b=None, padding="valid", stride=1, dilation=1, groups=1,
                   flip_kernel=False, padding_mode="zeros"):
    _np_pad_mode(padding_mode)
    dt = _work_dtype(x, w, b)
    x = np.asarray(x).astype(dt)
    w = np.asarray(w).astype(dt)
    nd, s, d, pads, out, c_g, o_g = _setup(x.shape, w, padding, stride, dilation, groups,
                                           flip_kernel)
    if flip_kernel:
        w = _flip(w)
    xpad = pad_input(x, pads, padding_mode)
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
                    flip_kernel=False, padding_mode="zeros"):
    """Explicit adjoint loops: scatter-add over kernel offsets for dx, correlation for dw.

    ``dx`` is first accumulated on the padded grid, then the halo is folded back onto the input
    by the adjoint of the padding operator (``padding_mode``); ``dw`` reads the padded ``x``.
    """
    _np_pad_mode(padding_mode)
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
    xpad = pad_input(x, pads, padding_mode)
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
    dx = unpad_adjoint(dxpad, x.shape[2:], pads, padding_mode)
    if flip_kernel:
        dw = _flip(dw)
    db = dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
    return Grads(np.ascontiguousarray(dx), np.ascontiguousarray(dw), db)


# ----------------------------------------------------------------------------------------------
# transposed convolution (torch.nn.functional.conv_transpose{1,2,3}d, any number of axes)
# ----------------------------------------------------------------------------------------------

def resolve_transposed_padding(padding, in_spatial, kernel, stride=1, dilation=1,
                               flip_kernel=False):
    """``(lo, hi)`` per axis for a transposed convolution over an input of ``in_spatial``.

    Ints, sequences of ints / ``(lo, hi)`` pairs, ``"valid"`` and ``"full"`` mean what they mean
    for the forward convolution; ``"same"`` is the "same" padding of a forward convolution over
    an input of length ``n * s`` (the transposed output length) with the same ``k, s, d``.
    """
    nd = len(in_spatial)
    s = _per_axis(stride, nd, "stride")
    if isinstance(padding, str) and padding == "same":
        long_spatial = tuple(n * ss for n, ss in zip(in_spatial, s))
        return resolve_padding("same", long_spatial, kernel, s, dilation, flip_kernel)
    return resolve_padding(padding, in_spatial, kernel, s, dilation, flip_kernel)


def transposed_output_spatial(in_spatial, kernel, padding=0, stride=1, dilation=1,
                              output_padding=0, flip_kernel=False):
    """Per axis ``out = (n-1)*s - lo - hi + d*(k-1) + 1 + output_padding``.

    ``padding="same"`` gives ``n*s + output_padding``. Raises ValueError if any ``out < 1``.
    """
    nd = len(in_spatial)
    s = _per_axis(stride, nd, "stride")
    d = _per_axis(dilation, nd, "dilation")
    op = _per_axis(output_padding, nd, "output_padding")
    pads = resolve_transposed_padding(padding, in_spatial, kernel, s, d, flip_kernel)
    same = isinstance(padding, str) and padding == "same"
    out = []
    for n, k, ss, dd, (lo, hi), o_p in zip(in_spatial, kernel, s, d, pads, op):
        if same:
            o = n * ss + o_p
        else:
            o = (n - 1) * ss - lo - hi + effective_kernel(k, dd) + o_p
        if o < 1:
            raise ValueError(f"oracle: empty transposed output (out={o}) on an axis")
        out.append(o)
    return tuple(out)


def _setup_transposed(x_shape, w, padding, stride, dilation, groups, output_padding,
                      flip_kernel):
    nd = len(x_shape) - 2
    if w.ndim != nd + 2:
        raise ValueError("oracle: x and w need the same number of spatial axes")
    c_in = x_shape[1]
    if w.shape[0] != c_in or c_in % groups:
        raise ValueError("oracle: transposed weights must be (C_in, C_out // groups, *k) with "
                         "groups dividing C_in")
    s = _per_axis(stride, nd, "stride")
    d = _per_axis(dilation, nd, "dilation")
    kernel = w.shape[2:]
    pads = resolve_transposed_padding(padding, x_shape[2:], kernel, s, d, flip_kernel)
    out = transposed_output_spatial(x_shape[2:], kernel, padding, s, d, output_padding,
                                    flip_kernel)
    c_g = c_in // groups          # input channels per group
    o_g = w.shape[1]              # output channels per group
    return nd, s, d, pads, out, c_g, o_g


def oracle_transposed_forward(x, w, b=None, padding=0, stride=1, dilation=1, groups=1,
                              output_padding=0, flip_kernel=False):
    """Plain scatter: input position ``p`` and tap ``j`` land on ``q = p*s + j*d - lo``.

    ``y[n, g*O_g + o, q] += sum_c w[g*C_g + c, o, j] * x[n, g*C_g + c, p]`` for ``0 <= q < out``
    (no conjugation, also for complex: torch semantics).
    """
    dt = _work_dtype(x, w, b)
    x = np.asarray(x).astype(dt)
    w = np.asarray(w).astype(dt)
    nd, s, d, pads, out, c_g, o_g = _setup_transposed(x.shape, w, padding, stride, dilation,
                                                      groups, output_padding, flip_kernel)
    if flip_kernel:
        w = _flip(w)
    n_batch = x.shape[0]
    c_out = o_g * groups
    y = np.zeros((n_batch, c_out) + out, dtype=dt)
    for j in np.ndindex(*w.shape[2:]):
        ps, qs = [], []
        for n, jj, ss, dd, (lo, _), o in zip(x.shape[2:], j, s, d, pads, out):
            p = np.arange(n)
            q = p * ss + jj * dd - lo
            ok = (q >= 0) & (q < o)
            ps.append(p[ok])
            qs.append(q[ok])
        for g in range(groups):
            xc = slice(g * c_g, (g + 1) * c_g)
            yo = slice(g * o_g, (g + 1) * o_g)
            xin = x[(slice(None), xc) + np.ix_(*ps)]                     # (N, C_g, *P)
            contrib = np.tensordot(xin, w[(xc, slice(None)) + j], axes=([1], [0]))
            # for one tap the q's of an axis are distinct, so += does not lose duplicates
            y[(slice(None), yo) + np.ix_(*qs)] += np.moveaxis(contrib, -1, 1)
    if b is not None:
        b = np.asarray(b).astype(dt)
        y += b.reshape((1, c_out) + (1,) * nd)
    return y


def oracle_transposed_backward(dy, x, w, padding=0, stride=1, dilation=1, groups=1,
                               output_padding=0, flip_kernel=False):
    """Adjoint of :func:`oracle_transposed_forward` written as gathers (PyTorch complex rule).

    ``dy`` is zero-padded (``lo`` in front, enough behind), then for each tap ``j`` the strided
    window ``dypad[p*s + j*d]`` (``p`` over the input grid) is read:
    ``dx[n,ci,p] += sum_co conj(w[ci,co,j]) * window``;
    ``dw[ci,co,j] = sum_{n,p} conj(x) * window``.
    """
    dt = _work_dtype(dy, x, w)
    dy = np.asarray(dy).astype(dt)
    x = np.asarray(x).astype(dt)
    w = np.asarray(w).astype(dt)
    nd, s, d, pads, out, c_g, o_g = _setup_transposed(x.shape, w, padding, stride, dilation,
                                                      groups, output_padding, flip_kernel)
    expected = (x.shape[0], o_g * groups) + out
    if dy.shape != expected:
        raise ValueError(f"oracle: dy has shape {dy.shape}, expected {expected}")
    w_eff = _flip(w) if flip_kernel else w
    widths = [(0, 0), (0, 0)]
    for n, k, ss, dd, (lo, _), o in zip(x.shape[2:], w.shape[2:], s, d, pads, out):
        # largest index read is (n-1)*s + (k-1)*d on the padded grid, whose first o start at lo
        behind = max(0, (n - 1) * ss + effective_kernel(k, dd) - lo - o)
        widths.append((lo, behind))
    dypad = np.pad(dy, widths)
    dx = np.zeros_like(x)
    dw = np.zeros_like(w_eff)
    red = [0] + list(range(2, x.ndim))
    for j in np.ndindex(*w.shape[2:]):
        win = dypad[(slice(None), slice(None)) + tuple(
            slice(jj * dd, jj * dd + (n - 1) * ss + 1, ss)
            for jj, ss, dd, n in zip(j, s, d, x.shape[2:]))]          # (N, C_out, *n)
        for g in range(groups):
            xc = slice(g * c_g, (g + 1) * c_g)
            yo = slice(g * o_g, (g + 1) * o_g)
            dx[:, xc] += np.moveaxis(
                np.tensordot(win[:, yo], np.conj(w_eff[(xc, slice(None)) + j]),
                             axes=([1], [1])), -1, 1)
            dw[(xc, slice(None)) + j] = np.tensordot(np.conj(x[:, xc]), win[:, yo],
                                                     axes=(red, red))
    if flip_kernel:
        dw = _flip(dw)
    db = dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
    return Grads(np.ascontiguousarray(dx), np.ascontiguousarray(dw), db)


# ----------------------------------------------------------------------------------------------
# channels-last layout helpers
# ----------------------------------------------------------------------------------------------

def to_channels_last(a):
    """Activations ``(N, C, *sp) -> (N, *sp, C)``."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(a), 1, -1))


def from_channels_last(a):
    """Activations ``(N, *sp, C) -> (N, C, *sp)``."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(a), -1, 1))


def weights_to_channels_last(w):
    """Weights ``(C_out, C_g, *k) -> (*k, C_g, C_out)`` (TensorFlow HWIO)."""
    w = np.asarray(w)
    return np.ascontiguousarray(np.transpose(w, tuple(range(2, w.ndim)) + (1, 0)))


def weights_from_channels_last(w):
    """Weights ``(*k, C_g, C_out) -> (C_out, C_g, *k)``."""
    w = np.asarray(w)
    return np.ascontiguousarray(
        np.transpose(w, (w.ndim - 1, w.ndim - 2) + tuple(range(w.ndim - 2))))


def oracle_products(x, dy, conj_k, groups):
    """The frequency-domain channel products of CONVENTIONS section 3, by einsum in
    complex128: ``Y``, ``DX`` and ``DW`` from batch-major spectra ``X (N, C, F)``,
    ``DY (N, O, F)`` and the spectrum of ``conj(w)`` ``(O, C // groups, F)``."""
    x, dy, conj_k = (np.asarray(a).astype(np.complex128) for a in (x, dy, conj_k))
    n, c, f = x.shape
    o = dy.shape[1]
    k = np.conj(conj_k).reshape(groups, o // groups, c // groups, f)   # K = conj(FFT(conj w))
    xg = x.reshape(n, groups, c // groups, f)
    dyg = dy.reshape(n, groups, o // groups, f)
    y = np.einsum("ngcf,gocf->ngof", xg, k).reshape(n, o, f)
    dx = np.einsum("ngof,gocf->ngcf", dyg, np.conj(k)).reshape(n, c, f)
    dw = np.einsum("ngof,ngcf->gocf", np.conj(dyg), xg).reshape(o, c // groups, f)
    return y, dx, dw
