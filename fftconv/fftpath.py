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
``FFT(w)`` that of the zero-dilated kernel (dilation).  Neither is built with
zeros: ``dy`` and ``w`` are transformed on their coarse grids and their
spectra tiled, and ``y`` and ``dw`` are folded onto the coarse grids before
their (smaller) inverse transforms (``resampling``, ``geometry``).

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

from . import contraction, resampling
from .config import Settings
from .geometry import ConvGeometry
from .transforms import ForwardTransform, InverseTransform, signal_bytes, spectrum_bytes

FLIP = slice(None, None, -1)


class WeightSpectra(NamedTuple):
    """``k`` for the forward product and ``conj_k`` for the input gradient."""

    k: np.ndarray
    conj_k: np.ndarray


def buffer_list(geom: ConvGeometry, chunk: int) -> list:
    """``(name, rows, grid, signal)`` for every buffer of an engine, in spectra.

    ``signal`` is False for spectrum-only arrays: the kept ``K``, the tiled
    spectra of ``w`` and ``dy`` and the unfolded products of ``y`` and ``dw``
    (only where stride/dilation make them differ from a transform buffer), and
    the running weight-gradient sum when the batch is chunked.
    """
    full, by_stride, by_dilation = geom.fft_shape, geom.stride_fft_shape, geom.dilation_fft_shape
    weights = geom.out_channels * (geom.in_channels // geom.groups)
    strided, dilated = by_stride != full, by_dilation != full
    buffers = [("x", chunk * geom.in_channels, full, True),
               ("dx", chunk * geom.in_channels, full, True),
               ("dy", chunk * geom.out_channels, by_stride, True),
               ("y", chunk * geom.out_channels, by_stride, True),
               ("w", weights, by_dilation, True),
               ("dw", weights, by_dilation, True),
               ("k", weights, full, False)]
    buffers += [("conj_k", weights, full, False)] if dilated else []
    buffers += [("dy tiled", chunk * geom.out_channels, full, False),
                ("y unfolded", chunk * geom.out_channels, full, False)] if strided else []
    buffers += [("dw unfolded", weights, full, False)] if dilated or chunk < geom.batch else []
    return buffers


def workspace_bytes(geom: ConvGeometry, dtype, chunk: int) -> int:
    """Bytes of all buffers of an engine that processes ``chunk`` samples at a time."""
    return sum(spectrum_bytes(rows, grid, dtype) + (signal_bytes(rows, grid, dtype) if sig else 0)
               for _, rows, grid, sig in buffer_list(geom, chunk))


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
        self._scratch = {}
        c, g = self.chunk, geom.groups
        weight_rows = (geom.out_channels, geom.in_channels // g)
        self._layouts = {"x": ((c, geom.in_channels), geom.fft_shape),
                         "dx": ((c, geom.in_channels), geom.fft_shape),
                         "dy": ((c, geom.out_channels), geom.stride_fft_shape),
                         "y": ((c, geom.out_channels), geom.stride_fft_shape),
                         "w": (weight_rows, geom.dilation_fft_shape),
                         "dw": (weight_rows, geom.dilation_fft_shape)}

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
            batch_shape, grid = self._layouts[name]
            self._transforms[name] = kind(batch_shape, grid, self.dtype, self.settings)
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

    def _flat(self, spec: np.ndarray) -> np.ndarray:
        """``(*freq, *batch)`` on the full grid -> ``(F, *batch)``."""
        return spec.reshape((self.geom.spectrum_size,) + spec.shape[self.geom.ndim:])

    def _spectrum(self, name: str, operand, placement) -> np.ndarray:
        """Transform ``operand`` on its grid; spectrum tiled to the full grid, flattened."""
        transform = self._transform(name)
        spec = transform(operand, placement)
        spec = resampling.tile(spec, transform.fft_shape, self.geom.fft_shape, transform.real)
        return self._flat(spec)

    def _product_buffer(self, name: str, scratch: bool = False) -> np.ndarray:
        """Where a full-grid product for inverse transform ``name`` goes: straight
        into its spectrum buffer, or into a scratch array when it must be folded
        (coarse grid) or summed over chunks (``scratch=True``) first."""
        transform = self._transform(name, inverse=True)
        if transform.fft_shape == self.geom.fft_shape and not scratch:
            return self._flat(transform.spectrum)
        if name not in self._scratch:
            self._scratch[name] = np.empty((self.geom.spectrum_size,) + transform.batch_shape,
                                           transform.spectrum.dtype)
        return self._scratch[name]

    def _deliver(self, name: str, product: np.ndarray, accumulate: bool = False):
        """Put ``product`` (from :meth:`_product_buffer`) into the spectrum buffer of
        inverse transform ``name``, folded onto its grid, replacing or adding."""
        transform = self._transform(name, inverse=True)
        if product is self._scratch.get(name):
            full = product.reshape(self.geom.spectrum_shape + transform.batch_shape)
            folded = resampling.fold(full, self.geom.fft_shape, transform.fft_shape,
                                     transform.real)
            if accumulate:
                transform.spectrum += folded
            else:
                transform.spectrum[...] = folded

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
            product = self._product_buffer("y")
            contraction.forward_product(x_spec, weights.k, g.groups, out=product)
            self._deliver("y", product)
            self._transform("y", inverse=True)(g.y_crop, rows=y[rows].shape[0], out=y[rows])
        return y, (None if self.chunked else x_spec)

    def backward(self, dy: np.ndarray, x: np.ndarray, weights: WeightSpectra,
                 x_spec: Optional[np.ndarray] = None) -> tuple:
        """``(dx, dw)``; ``x_spec`` is the kept ``X`` of an unchunked forward pass."""
        g = self.geom
        dx = np.empty(g.x_shape, self.dtype)
        for i, rows in enumerate(self.chunks()):
            xs = x_spec if x_spec is not None else self.x_spectrum(x[rows])
            dys = self.dy_spectrum(dy[rows])
            contraction.input_grad_product(dys, weights.conj_k, g.groups,
                                           out=self._product_buffer("dx"))
            self._transform("dx", inverse=True)(g.dx_crop, rows=dx[rows].shape[0], out=dx[rows])
            conj_dy = np.conjugate(dys, out=dys)
            product = self._product_buffer("dw", scratch=self.chunked)
            contraction.weight_grad_product(xs, conj_dy, g.groups, out=product)
            self._deliver("dw", product, accumulate=i > 0)
        return dx, self._weight_grad_from_spectrum()

    def _weight_grad_from_spectrum(self) -> np.ndarray:
        g = self.geom
        dw = self._transform("dw", inverse=True)(g.dw_crop)
        if self.dtype.kind == "c":
            np.conjugate(dw, out=dw)
        if g.flip_kernel:
            dw = np.ascontiguousarray(dw[(Ellipsis,) + (FLIP,) * g.ndim])
        return dw
