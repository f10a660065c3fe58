"""Direct (spatial-domain) convolution: the comparison for every FFT result.

Same semantics as the FFT path (CONVENTIONS §1-3), computed as one batched
GEMM per kernel offset: for offset ``j`` the strided patch
``xpad[:, :, j*d : j*d + (out-1)*s + 1 : s]`` of every channel is multiplied by
the ``C_out x C_in`` slice ``w[:, :, j]`` (per group) and accumulated.  The
Python loop runs over the ``prod(kernel)`` offsets, never over pixels, and
memory stays ``O(N * C * out)`` (im2col of the whole kernel would need ``K``
times that).

Channels are moved to the front once, as ``(groups, C/groups, N, *spatial)``,
so every product is a ``(G, Og, Cg) @ (G, Cg, N*out)`` ``np.matmul``.

All functions take arrays already checked and cast to the compute dtype, and a
:class:`~fftconv.geometry.ConvGeometry`.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .geometry import ConvGeometry


def _kernel_offsets(geom: ConvGeometry):
    """Yield ``(j, window)``: kernel index and the strided window of ``xpad`` it reads."""
    for j in np.ndindex(*geom.kernel):
        yield j, tuple(slice(ji * d, ji * d + (o - 1) * s + 1, s)
                       for ji, d, o, s in zip(j, geom.dilation, geom.out_size, geom.stride))


def _channels_first(a: np.ndarray, groups: int) -> np.ndarray:
    """``(N, C, *sp)`` -> contiguous ``(groups, C // groups, N, *sp)``."""
    n, c = a.shape[:2]
    grouped = a.reshape((n, groups, c // groups) + a.shape[2:])
    return np.ascontiguousarray(np.moveaxis(grouped, 0, 2))


def _batch_first(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_channels_first`: ``(G, Cg, N, *sp)`` -> ``(N, C, *sp)``."""
    g, cg, n = a.shape[:3]
    return np.ascontiguousarray(np.moveaxis(a, 2, 0)).reshape((n, g * cg) + a.shape[3:])


def _oriented(w: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """The kernel as correlated: flipped on every spatial axis for ``flip_kernel``."""
    return w[(Ellipsis,) + (slice(None, None, -1),) * geom.ndim] if geom.flip_kernel else w


def _grouped_kernel(w: np.ndarray, groups: int) -> np.ndarray:
    """``(C_out, Cg, *k)`` -> ``(G, Og, Cg, *k)``."""
    return w.reshape((groups, w.shape[0] // groups) + w.shape[1:])


def _padded_channels_first(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    xt = _channels_first(x, geom.groups)
    return np.pad(xt, ((0, 0),) * 3 + geom.padding)


def forward(x: np.ndarray, w: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y`` of shape ``(N, C_out, *out)`` (no bias)."""
    g, n = geom.groups, geom.batch
    xpad = _padded_channels_first(x, geom)
    wg = _grouped_kernel(_oriented(w, geom), g)
    rows = n * prod(geom.out_size)
    acc = np.zeros((g, wg.shape[1], rows), dtype=np.result_type(x, w))
    for j, window in _kernel_offsets(geom):
        patch = xpad[(Ellipsis,) + window].reshape(g, -1, rows)
        acc += np.matmul(wg[(Ellipsis,) + j], patch)
    return _batch_first(acc.reshape(acc.shape[:2] + (n,) + geom.out_size))


def input_grad(dy: np.ndarray, w: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``dx``: scatter ``conj(w[:, :, j])^T @ dy`` back into each window (adjoint of ``forward``)."""
    g, n = geom.groups, geom.batch
    dyt = _channels_first(dy, g).reshape(g, dy.shape[1] // g, -1)
    wg = _grouped_kernel(np.conj(_oriented(w, geom)), g)
    dxpad = np.zeros((g, geom.in_channels // g, n) + geom.padded_size,
                     dtype=np.result_type(dy, w))
    for j, window in _kernel_offsets(geom):
        contribution = np.matmul(wg[(Ellipsis,) + j].transpose(0, 2, 1), dyt)
        dxpad[(Ellipsis,) + window] += contribution.reshape(
            contribution.shape[:2] + (n,) + geom.out_size)
    return _batch_first(dxpad[(Ellipsis,) + geom.dx_crop])


def weight_grad(dy: np.ndarray, x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``dw``: correlate ``dy`` with each window of ``conj(x)``, summed over the batch."""
    g = geom.groups
    xpad = _padded_channels_first(np.conj(x), geom)
    dyt = _channels_first(dy, g).reshape(g, dy.shape[1] // g, -1)
    rows = dyt.shape[-1]
    dw = np.empty((g, dyt.shape[1], geom.in_channels // g) + geom.kernel,
                  dtype=np.result_type(dy, x))
    for j, window in _kernel_offsets(geom):
        patch = xpad[(Ellipsis,) + window].reshape(g, -1, rows)
        dw[(Ellipsis,) + j] = np.matmul(dyt, patch.transpose(0, 2, 1))
    dw = dw.reshape((geom.out_channels,) + dw.shape[2:])
    return np.ascontiguousarray(_oriented(dw, geom))
