"""Batched N-d FFTs over preallocated buffers: the only code that calls an FFT.

Layout.  Every buffer is *frequency-major*: spatial (or frequency) axes first,
then the batch axes, e.g. ``(*fft_shape, N, C)``.  The transform runs over the
leading axes, and the spectrum comes out as ``(*spectrum_shape, N, C)``, which
reshapes for free to ``(F, N, C)``: one small ``N x C`` matrix per frequency,
exactly what the channel contraction multiplies with batched GEMMs.

Two backends do the work, behind the same two classes:

* ``"pyfftw"``: one ``pyfftw.FFTW`` object per buffer pair, planned once with
  the configured effort and time limit (FFTW plans and wisdom);
* ``"scipy"``: ``scipy.fft`` (pocketfft) with ``workers=threads``, the
  fallback for platforms without pyFFTW.

Zero padding is free: a :class:`ForwardTransform` writes its operand into the
same slots of a zeroed buffer on every call, so the zeros around it stay.
"""
from __future__ import annotations

from math import prod

import numpy as np
import scipy.fft

from .config import Settings

COMPLEX_OF = {np.dtype(np.float32): np.dtype(np.complex64),
              np.dtype(np.float64): np.dtype(np.complex128),
              np.dtype(np.complex64): np.dtype(np.complex64),
              np.dtype(np.complex128): np.dtype(np.complex128)}


def spectrum_shape(fft_shape, real: bool) -> tuple:
    """Half-spectrum on the last axis for real input, full spectrum otherwise."""
    fft_shape = tuple(fft_shape)
    return fft_shape[:-1] + (fft_shape[-1] // 2 + 1,) if real else fft_shape


def batch_last_view(buf: np.ndarray, nspatial: int) -> np.ndarray:
    """View a frequency-major ``(*spatial, *batch)`` buffer as ``(*batch, *spatial)``."""
    return np.moveaxis(buf, tuple(range(nspatial)), tuple(range(-nspatial, 0)))


def _empty(shape, dtype, backend: str) -> np.ndarray:
    if backend == "pyfftw":
        import pyfftw
        return pyfftw.empty_aligned(shape, dtype=dtype)
    return np.empty(shape, dtype=dtype)


def _fftw(src, dst, nspatial, direction, settings: Settings, destroy_input: bool):
    import pyfftw
    flags = (settings.planner_effort,) + (("FFTW_DESTROY_INPUT",) if destroy_input else ())
    return pyfftw.FFTW(src, dst, axes=tuple(range(nspatial)), direction=direction, flags=flags,
                       threads=settings.threads, planning_timelimit=settings.planning_timelimit)


class ForwardTransform:
    """Place a batch of operands into a zeroed buffer and transform it.

    Parameters
    ----------
    batch_shape : tuple
        Batch axes of the operand, e.g. ``(N, C_in)`` for ``x``.
    fft_shape : tuple
        Transform length per spatial axis.
    dtype : numpy dtype
        Compute dtype of the operand; real dtypes use real-to-complex FFTs.
    settings : Settings
        Backend, threads and FFTW planner effort.
    """

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings):
        self.dtype = np.dtype(dtype)
        self.real = self.dtype.kind == "f"
        self.nspatial = len(fft_shape)
        self.fft_shape = tuple(fft_shape)
        self.settings = settings
        self.calls = 0
        spec_shape = spectrum_shape(fft_shape, self.real) + tuple(batch_shape)
        self.input = _empty(self.fft_shape + tuple(batch_shape), self.dtype, settings.backend)
        if settings.backend == "pyfftw":
            self.output = _empty(spec_shape, COMPLEX_OF[self.dtype], settings.backend)
            self._fftw = _fftw(self.input, self.output, self.nspatial, "FFTW_FORWARD", settings,
                               destroy_input=False)
        self.input.fill(0)  # after planning: FFTW_MEASURE scribbles on the buffers
        self._slots = batch_last_view(self.input, self.nspatial)

    @property
    def nbytes(self) -> int:
        return self.input.nbytes + (self.output.nbytes if hasattr(self, "output") else 0)

    def __call__(self, operand: np.ndarray, placement) -> np.ndarray:
        """Transform ``operand`` (shape ``(*batch, *spatial)``) written at ``placement``.

        Returns the spectrum, frequency-major ``(*spectrum_shape, *batch)``; it
        lives in this object's buffer and is overwritten by the next call.
        """
        self._slots[(Ellipsis,) + tuple(placement)] = operand
        self.calls += 1
        if self.settings.backend == "pyfftw":
            self._fftw.execute()
            return self.output
        axes = tuple(range(self.nspatial))
        fft = scipy.fft.rfftn if self.real else scipy.fft.fftn
        return fft(self.input, axes=axes, workers=self.settings.threads)


class InverseTransform:
    """Inverse-transform a batch of spectra and crop the result.

    The caller writes the spectra into :attr:`input` (frequency-major, shape
    ``(*spectrum_shape, *batch)``), then calls the object with the crop slices.
    """

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings):
        self.dtype = np.dtype(dtype)
        self.real = self.dtype.kind == "f"
        self.nspatial = len(fft_shape)
        self.fft_shape = tuple(fft_shape)
        self.settings = settings
        self.calls = 0
        spec_shape = spectrum_shape(fft_shape, self.real) + tuple(batch_shape)
        self.input = _empty(spec_shape, COMPLEX_OF[self.dtype], settings.backend)
        if settings.backend == "pyfftw":
            self.output = _empty(self.fft_shape + tuple(batch_shape), self.dtype, settings.backend)
            self._fftw = _fftw(self.input, self.output, self.nspatial, "FFTW_BACKWARD", settings,
                               destroy_input=True)

    @property
    def nbytes(self) -> int:
        return self.input.nbytes + (self.output.nbytes if hasattr(self, "output") else 0)

    def __call__(self, crop, out_dtype) -> np.ndarray:
        """Inverse transform of :attr:`input`, cropped to ``crop`` and scaled by ``1/L``.

        Returns a new C-contiguous array ``(*batch, *cropped)`` of ``out_dtype``.
        """
        self.calls += 1
        if self.settings.backend == "pyfftw":
            self._fftw.execute()  # unnormalised; the 1/L rides on the crop copy below
            full, scale = self.output, 1.0 / prod(self.fft_shape)
        else:
            axes = tuple(range(self.nspatial))
            inverse = scipy.fft.irfftn if self.real else scipy.fft.ifftn
            kwargs = {"s": self.fft_shape} if self.real else {}
            full = inverse(self.input, axes=axes, workers=self.settings.threads,
                           overwrite_x=True, **kwargs)
            scale = None
        cropped = batch_last_view(full, self.nspatial)[(Ellipsis,) + tuple(crop)]
        result = np.empty(cropped.shape, dtype=out_dtype)
        if scale is None:
            result[...] = cropped
        else:
            np.multiply(cropped, scale, out=result, casting="unsafe")
        return result
