"""The FFT algorithm for one layer geometry: transforms + frequency-domain sums.

An :class:`FFTEngine` owns the six batched transforms of one training step,
three forward ones (``x``, ``w``, ``dy``) and three inverse ones (``y``,
``dx``, ``dw``), and composes them with the channel contraction like scipy's
``_freq_domain_conv``.  The forward pass and both gradients are the same
machinery with roles exchanged (CONVENTIONS §3):

* ``y  = crop_y (IFFT(X K))``            with ``K = conj(FFT(conj w))``,
* ``dx = crop_x (IFFT(DY conj(K)))``     (a convolution with the flipped weights),
* ``dw = crop_w (IFFT(X conj(DY)))``     (the input correlated with ``dy``),

where ``FFT(dy)`` is the transform of the zero-upsampled ``dy`` (stride) and
``FFT(w)`` that of the zero-dilated kernel (dilation).  Transforms are built
lazily, so a forward-only user never allocates gradient buffers.
"""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from . import contraction
from .config import Settings
from .geometry import ConvGeometry
from .transforms import ForwardTransform, InverseTransform


class WeightSpectra(NamedTuple):
    """``k`` for the forward product and ``conj_k`` for the input gradient."""

    k: np.ndarray
    conj_k: np.ndarray


class FFTEngine:
    """Frequency-domain forward and backward passes for one geometry and dtype.

    Not re-entrant: the spectra it returns live in its own buffers.  Callers
    that share an engine between threads hold :attr:`lock` for the whole call.
    """

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings):
        self.geom = geom
        self.dtype = np.dtype(dtype)
        self.settings = settings
        self.lock = threading.Lock()
        self._transforms = {}
        n, g = geom.batch, geom.groups
        self._batch_shapes = {"x": (n, geom.in_channels), "w": (geom.out_channels,
                                                               geom.in_channels // g),
                              "dy": (n, geom.out_channels), "y": (n, geom.out_channels),
                              "dx": (n, geom.in_channels), "dw": (geom.out_channels,
                                                                 geom.in_channels // g)}

    # -- transforms ----------------------------------------------------------
    def _transform(self, name: str, inverse: bool):
        """The transform for operand ``name``, built on first use."""
        if name not in self._transforms:
            kind = InverseTransform if inverse else ForwardTransform
            self._transforms[name] = kind(self._batch_shapes[name], self.geom.fft_shape,
                                          self.dtype, self.settings)
        return self._transforms[name]

    @property
    def transform_counts(self) -> dict:
        """Batched transforms executed so far: ``{"forward": int, "inverse": int}``."""
        counts = {"forward": 0, "inverse": 0}
        for t in self._transforms.values():
            counts["inverse" if isinstance(t, InverseTransform) else "forward"] += t.calls
        return counts

    @property
    def workspace_bytes(self) -> int:
        """Bytes held by the buffers allocated so far."""
        return sum(t.nbytes for t in self._transforms.values())

    def _spectrum(self, name: str, operand, placement) -> np.ndarray:
        spec = self._transform(name, inverse=False)(operand, placement)
        return spec.reshape((self.geom.spectrum_size,) + spec.shape[self.geom.ndim:])

    def _inverse_input(self, name: str) -> np.ndarray:
        buf = self._transform(name, inverse=True).input
        return buf.reshape((self.geom.spectrum_size,) + buf.shape[self.geom.ndim:])

    # -- spectra of the operands ----------------------------------------------
    def x_spectrum(self, x: np.ndarray) -> np.ndarray:
        """``X``, frequency-major ``(F, N, C_in)``."""
        return self._spectrum("x", x, self.geom.x_placement)

    def weight_spectra(self, w: np.ndarray) -> WeightSpectra:
        """``K`` and ``conj(K)`` of the (flipped, dilated) kernel, ``(F, C_out, Cg)`` each."""
        if self.geom.flip_kernel:
            w = w[(Ellipsis,) + (slice(None, None, -1),) * self.geom.ndim]
        conj_k = self._spectrum("w", np.conj(w) if self.dtype.kind == "c" else w,
                                self.geom.w_placement)
        return WeightSpectra(k=np.conj(conj_k), conj_k=conj_k)

    def dy_spectrum(self, dy: np.ndarray) -> np.ndarray:
        """``DY`` of the zero-upsampled ``dy``, ``(F, N, C_out)``."""
        return self._spectrum("dy", dy, self.geom.dy_placement)

    # -- the three products -----------------------------------------------------
    def output(self, x_spec, weights: WeightSpectra) -> np.ndarray:
        """``y`` (no bias), ``(N, C_out, *out)`` in the compute dtype."""
        contraction.forward_product(x_spec, weights.k, self.geom.groups,
                                    out=self._inverse_input("y"))
        return self._transform("y", inverse=True)(self.geom.y_crop, self.dtype)

    def input_grad(self, dy_spec, weights: WeightSpectra) -> np.ndarray:
        """``dx``, ``(N, C_in, *in)``."""
        contraction.input_grad_product(dy_spec, weights.conj_k, self.geom.groups,
                                       out=self._inverse_input("dx"))
        return self._transform("dx", inverse=True)(self.geom.dx_crop, self.dtype)

    def weight_grad(self, x_spec, dy_spec) -> np.ndarray:
        """``dw``, ``(C_out, Cg, *kernel)``.  Conjugates ``dy_spec`` in place."""
        conj_dy = np.conjugate(dy_spec, out=dy_spec)
        contraction.weight_grad_product(x_spec, conj_dy, self.geom.groups,
                                        out=self._inverse_input("dw"))
        dw = self._transform("dw", inverse=True)(self.geom.dw_crop, self.dtype)
        if self.dtype.kind == "c":
            np.conjugate(dw, out=dw)
        if self.geom.flip_kernel:
            dw = np.ascontiguousarray(dw[(Ellipsis,) + (slice(None, None, -1),) * self.geom.ndim])
        return dw
