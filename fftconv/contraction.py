"""The channel sums of a convolution layer, done per frequency as batched GEMMs.

All spectra are frequency-major ``(F, rows, cols)`` (see ``transforms``), so at
each of the ``F`` frequencies the layer is three small complex matrix
products (Mathieu, Henaff & LeCun 2013), per group ``g``:

===========  ===========================================  ===================
product      per frequency                                 shapes
===========  ===========================================  ===================
forward      ``Y[n, o]  = sum_c X[n, c] * K[o, c]``           ``(N x Cg)(Cg x Og)``
input grad   ``DX[n, c] = sum_o DY[n, o] * conj(K[o, c])``    ``(N x Og)(Og x Cg)``
weight grad  ``DW[o, c] = sum_n conj(DY[n, o]) * X[n, c]``    ``(Og x N)(N x Cg)``
===========  ===========================================  ===================

with ``K = conj(FFT(conj(w)))`` (``conj(FFT(w))`` for real ``w``), so that
``IFFT(X K)`` is the cross-correlation of CONVENTIONS §1.  ``np.matmul`` runs
each product as one batched GEMM over ``(F, groups)``; the group split is a
reshape plus a transpose view, never a copy.
"""
from __future__ import annotations

import numpy as np


def _grouped(spec: np.ndarray, groups: int) -> np.ndarray:
    """View ``(F, rows, C)`` as ``(F, groups, rows, C // groups)``."""
    f, rows, cols = spec.shape
    return spec.reshape(f, rows, groups, cols // groups).transpose(0, 2, 1, 3)


def _grouped_weights(spec: np.ndarray, groups: int) -> np.ndarray:
    """View weights ``(F, C_out, Cg)`` as ``(F, groups, C_out // groups, Cg)``."""
    f, c_out, cg = spec.shape
    return spec.reshape(f, groups, c_out // groups, cg)


def forward_product(x_spec, k_spec, groups, out):
    """``out (F, N, C_out) = X (F, N, C_in) @ K^T`` per group; K is ``(F, C_out, Cg)``."""
    x, k = _grouped(x_spec, groups), _grouped_weights(k_spec, groups)
    np.matmul(x, k.transpose(0, 1, 3, 2), out=_grouped(out, groups))
    return out


def input_grad_product(dy_spec, conj_k_spec, groups, out):
    """``out (F, N, C_in) = DY (F, N, C_out) @ conj(K)`` per group."""
    dy, kc = _grouped(dy_spec, groups), _grouped_weights(conj_k_spec, groups)
    np.matmul(dy, kc, out=_grouped(out, groups))
    return out


def weight_grad_product(x_spec, conj_dy_spec, groups, out):
    """``out (F, C_out, Cg) = conj(DY)^T @ X`` per group, summed over the batch."""
    x, dyc = _grouped(x_spec, groups), _grouped(conj_dy_spec, groups)
    np.matmul(dyc.transpose(0, 1, 3, 2), x, out=_grouped_weights(out, groups))
    return out
