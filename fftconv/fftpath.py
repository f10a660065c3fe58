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
``FFT(w)`` that of the zero-dilated kernel (dilation).

Memory: the batch is processed ``chunk`` samples at a time.  With one chunk
(the default) the spectrum of ``x`` from the forward pass is reused by the
backward pass; with several, the backward pass transforms ``x`` again, chunk
by chunk, and sums the weight-gradient spectra over chunks before its single
inverse transform.  Transforms are built lazily, so a forward-only user never
allocates gradient buffers.
"""
from __future__ import annotations

import threading
from typing import NamedTuple, Optional

import numpy as np

from . import contraction
from .config import Settings
from .geometry import ConvGeometry
from .transforms import ForwardTransform, InverseTransform, signal_bytes, spectrum_bytes

FLIP = slice(None, None, -1)


class WeightSpectra(NamedTuple):
    """``k`` for the forward product and ``conj_k`` for the input gradient."""

    k: np.ndarray
    conj_k: np.ndarray


def workspace_bytes(geom: ConvGeometry, dtype, chunk: int) -> int:
    """Bytes of all buffers of an engine that processes ``chunk`` samples at a time.

    Six signal/spectrum buffer pairs (``x``, ``dx``: ``chunk * C_in`` rows; ``dy``,
    ``y``: ``chunk * C_out``; ``w``, ``dw``: ``C_out * C_in / groups``), the
    kept ``K`` spectrum, and, with several chunks, one weight-gradient
    spectrum for the running sum.
    """
    weight_rows = geom.out_channels * (geom.in_channels // geom.groups)
    rows = 2 * chunk * (geom.in_channels + geom.out_channels) + 2 * weight_rows
    pair = signal_bytes(1, geom.fft_shape, dtype) + spectrum_bytes(1, geom.fft_shape, dtype)
    extra_spectra = weight_rows * (1 if chunk >= geom.batch else 2)
    return rows * pair + extra_spectra * spectrum_bytes(1, geom.fft_shape, dtype)


class FFTEngine:
    """Frequency-domain forward and backward passes for one geometry and dtype.

    Not re-entrant: the spectra it returns live in its own buffers.  Callers
    that share an engine between threads hold :attr:`lock` for the whole call.
    """

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings,
                 chunk: Optional[int] = None):
        self.geom = geom
        self.dtype = np.dtype(dtype)
        self.settings = settings
        self.chunk = min(chunk or geom.batch, geom.batch)
        self.lock = threading.Lock()
        self._transforms = {}
        c, g = self.chunk, geom.groups
        weight_rows = (geom.out_channels, geom.in_channels // g)
        self._batch_shapes = {"x": (c, geom.in_channels), "dx": (c, geom.in_channels),
                              "dy": (c, geom.out_channels), "y": (c, geom.out_channels),
                              "w": weight_rows, "dw": weight_rows}

    @property
    def chunked(self) -> bool:
        return self.chunk < self.geom.batch

    def chunks(self):
        """Row slices of the batch, ``chunk`` samples each."""
        return [slice(i, i + self.chunk) for i in range(0, self.geom.batch, self.chunk)]

    # -- transforms ----------------------------------------------------------------
    def _transform(self, name: str, inverse: bool = False):
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
        """Bytes this engine needs for a whole training step (allocated or not)."""
        return workspace_bytes(self.geom, self.dtype, self.chunk)

    def _spectrum(self, name: str, operand, placement) -> np.ndarray:
        spec = self._transform(name)(operand, placement)
        return spec.reshape((self.geom.spectrum_size,) + spec.shape[self.geom.ndim:])

    def _product_buffer(self, name: str) -> np.ndarray:
        """The (flattened, frequency-major) spectrum buffer of inverse transform ``name``."""
        buf = self._transform(name, inverse=True).spectrum
        return buf.reshape((self.geom.spectrum_size,) + buf.shape[self.geom.ndim:])

    # -- spectra of the operands -----------------------------------------------------
    def x_spectrum(self, x_rows: np.ndarray) -> np.ndarray:
        """``X`` of up to ``chunk`` samples, frequency-major ``(F, chunk, C_in)``."""
        return self._spectrum("x", x_rows, self.geom.x_placement)

    def weight_spectra(self, w: np.ndarray) -> WeightSpectra:
        """``K`` and ``conj(K)`` of the (flipped, dilated) kernel, ``(F, C_out, Cg)`` each."""
        if self.geom.flip_kernel:
            w = w[(Ellipsis,) + (FLIP,) * self.geom.ndim]
        conj_k = self._spectrum("w", np.conj(w) if self.dtype.kind == "c" else w,
                                self.geom.w_placement)
        return WeightSpectra(k=np.conj(conj_k), conj_k=conj_k)

    def dy_spectrum(self, dy_rows: np.ndarray) -> np.ndarray:
        """``DY`` of the zero-upsampled ``dy`` of up to ``chunk`` samples."""
        return self._spectrum("dy", dy_rows, self.geom.dy_placement)

    # -- the passes -----------------------------------------------------------------
    def forward(self, x: np.ndarray, weights: WeightSpectra) -> tuple:
        """``(y, x_spec)``: ``y`` without bias, and ``X`` if the batch was one chunk."""
        g = self.geom
        y = np.empty(g.y_shape, self.dtype)
        x_spec = None
        for rows in self.chunks():
            x_spec = self.x_spectrum(x[rows])
            contraction.forward_product(x_spec, weights.k, g.groups, out=self._product_buffer("y"))
            n = len(range(*rows.indices(g.batch)))
            self._transform("y", inverse=True)(g.y_crop, rows=n, out=y[rows])
        return y, (None if self.chunked else x_spec)

    def backward(self, dy: np.ndarray, x: np.ndarray, weights: WeightSpectra,
                 x_spec: Optional[np.ndarray] = None) -> tuple:
        """``(dx, dw)``; ``x_spec`` is the kept ``X`` of an unchunked forward pass."""
        g = self.geom
        dx = np.empty(g.x_shape, self.dtype)
        dw_spec = self._product_buffer("dw")
        partial = np.empty_like(dw_spec) if self.chunked else dw_spec
        for i, rows in enumerate(self.chunks()):
            xs = x_spec if x_spec is not None else self.x_spectrum(x[rows])
            dys = self.dy_spectrum(dy[rows])
            contraction.input_grad_product(dys, weights.conj_k, g.groups,
                                           out=self._product_buffer("dx"))
            n = len(range(*rows.indices(g.batch)))
            self._transform("dx", inverse=True)(g.dx_crop, rows=n, out=dx[rows])
            conj_dy = np.conjugate(dys, out=dys)
            contraction.weight_grad_product(xs, conj_dy, g.groups, out=partial)
            if self.chunked:
                if i == 0:
                    dw_spec[...] = partial
                else:
                    dw_spec += partial
        return dx, self._weight_grad_from_spectrum()

    def _weight_grad_from_spectrum(self) -> np.ndarray:
        g = self.geom
        dw = self._transform("dw", inverse=True)(g.dw_crop)
        if self.dtype.kind == "c":
            np.conjugate(dw, out=dw)
        if g.flip_kernel:
            dw = np.ascontiguousarray(dw[(Ellipsis,) + (FLIP,) * g.ndim])
        return dw
