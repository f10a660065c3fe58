"""Batched N-d FFTs over preallocated buffers: the only code that calls an FFT.

Layout (chosen by measurement, see ``bench/layout.py``): signals are
*batch-major* ``(*batch, *fft_shape)``, spectra are *frequency-major*
``(*spectrum_shape, *batch)``.  FFTW reads contiguous signals and writes the
spectrum with the batch axes innermost (and the inverse the other way round),
so the transpose that the channel contraction needs rides inside the
transform, where it costs least: the spectrum reshapes for free to
``(F, N, C)``, one small ``N x C`` matrix per frequency for the batched GEMMs,
while placing operands into, and cropping results out of, the signal buffers
stays a contiguous copy.

Two backends do the work behind the same two classes:

* ``"pyfftw"``: one ``pyfftw.FFTW`` object per buffer pair, planned once with
  the configured effort, time limit and threads, using and extending the
  stored wisdom (``fftconv.wisdom``);
* ``"scipy"``: ``scipy.fft`` (pocketfft) with ``workers=threads``, the
  fallback for platforms without pyFFTW.

Zero padding is free: a :class:`ForwardTransform` writes its operand into the
same slots of a zeroed buffer on every call, so the zeros around it stay.
"""
from __future__ import annotations

from math import prod

import numpy as np
import scipy.fft

from . import wisdom
from .config import Settings

COMPLEX_OF = {np.dtype(np.float32): np.dtype(np.complex64),
              np.dtype(np.float64): np.dtype(np.complex128),
              np.dtype(np.complex64): np.dtype(np.complex64),
              np.dtype(np.complex128): np.dtype(np.complex128)}


def spectrum_shape(fft_shape, real: bool) -> tuple:
    """Half-spectrum on the last axis for real input, full spectrum otherwise."""
    fft_shape = tuple(fft_shape)
    return fft_shape[:-1] + (fft_shape[-1] // 2 + 1,) if real else fft_shape


def signal_bytes(batch: int, fft_shape, dtype) -> int:
    """Bytes of one signal buffer ``(batch, *fft_shape)``."""
    return batch * prod(fft_shape) * np.dtype(dtype).itemsize


def spectrum_bytes(batch: int, fft_shape, dtype) -> int:
    """Bytes of one spectrum buffer for ``batch`` signals of ``dtype``."""
    dtype = np.dtype(dtype)
    return batch * prod(spectrum_shape(fft_shape, dtype.kind == "f")) * COMPLEX_OF[dtype].itemsize


def _batch_first(spec: np.ndarray, nspatial: int) -> np.ndarray:
    """View a frequency-major ``(*freq, *batch)`` array as ``(*batch, *freq)``."""
    return np.moveaxis(spec, tuple(range(nspatial)), tuple(range(-nspatial, 0)))


def _frequency_first(sig: np.ndarray, nspatial: int) -> np.ndarray:
    """View a batch-major ``(*batch, *space)`` array as ``(*space, *batch)``."""
    return np.moveaxis(sig, tuple(range(-nspatial, 0)), tuple(range(nspatial)))


def _empty(shape, dtype, backend: str) -> np.ndarray:
    if backend == "pyfftw":
        import pyfftw
        return pyfftw.empty_aligned(shape, dtype=dtype)
    return np.empty(shape, dtype=dtype)


def _fftw(src, dst, nspatial, direction, settings: Settings, destroy_input: bool):
    """A planned ``pyfftw.FFTW`` over the last ``nspatial`` axes of fixed buffers."""
    import pyfftw
    wisdom.load_once()
    flags = (settings.planner_effort,) + (("FFTW_DESTROY_INPUT",) if destroy_input else ())
    plan = pyfftw.FFTW(src, dst, axes=tuple(range(-nspatial, 0)), direction=direction,
                       flags=flags, threads=settings.threads,
                       planning_timelimit=settings.planning_timelimit)
    if settings.planner_effort != "FFTW_ESTIMATE":
        wisdom.save()
    return plan


class _Transform:
    """Shared set-up: shapes, dtypes, counters."""

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings):
        self.dtype = np.dtype(dtype)
        self.real = self.dtype.kind == "f"
        self.nspatial = len(fft_shape)
        self.fft_shape = tuple(fft_shape)
        self.batch_shape = tuple(batch_shape)
        self.settings = settings
        self.calls = 0
        self.signal = _empty(self.batch_shape + self.fft_shape, self.dtype, settings.backend)
        self.spectrum = _empty(spectrum_shape(fft_shape, self.real) + self.batch_shape,
                               COMPLEX_OF[self.dtype], settings.backend)

    @property
    def nbytes(self) -> int:
        """Bytes of the signal and spectrum buffers."""
        return self.signal.nbytes + self.spectrum.nbytes

    @property
    def _fftw_backend(self) -> bool:
        return self.settings.backend == "pyfftw"


class ForwardTransform(_Transform):
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
        super().__init__(batch_shape, fft_shape, dtype, settings)
        if self._fftw_backend:
            self._plan = _fftw(self.signal, _batch_first(self.spectrum, self.nspatial),
                               self.nspatial, "FFTW_FORWARD", settings, destroy_input=False)
        self.signal.fill(0)  # after planning: FFTW_MEASURE scribbles on the buffers

    def __call__(self, operand: np.ndarray, placement) -> np.ndarray:
        """Transform ``operand`` (``(*batch, *spatial)``) written at ``placement``.

        ``operand`` may have fewer rows than the buffer on its first axis (the
        last chunk of a batch); the remaining rows are zeroed.  Returns the
        spectrum, frequency-major ``(*spectrum_shape, *batch)``; it lives in this
        object's buffer and is overwritten by the next call.
        """
        rows = operand.shape[0]
        slots = (Ellipsis,) + tuple(placement)
        self.signal[:rows][slots] = operand
        if rows < self.signal.shape[0]:
            self.signal[rows:][slots] = 0
        self.calls += 1
        if self._fftw_backend:
            self._plan.execute()
        else:
            fft = scipy.fft.rfftn if self.real else scipy.fft.fftn
            self.spectrum[...] = fft(_frequency_first(self.signal, self.nspatial),
                                     axes=tuple(range(self.nspatial)),
                                     workers=self.settings.threads)
        return self.spectrum


class InverseTransform(_Transform):
    """Inverse-transform a batch of spectra and crop the result.

    The caller writes the spectra into :attr:`spectrum` (frequency-major,
    ``(*spectrum_shape, *batch)``), then calls the object with the crop slices.
    """

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings):
        super().__init__(batch_shape, fft_shape, dtype, settings)
        if self._fftw_backend:
            self._plan = _fftw(_batch_first(self.spectrum, self.nspatial), self.signal,
                               self.nspatial, "FFTW_BACKWARD", settings, destroy_input=True)

    def __call__(self, crop, rows=None, out=None) -> np.ndarray:
        """Inverse transform of :attr:`spectrum`, cropped and scaled by ``1 / prod(L)``.

        Returns ``(rows, *batch[1:], *cropped)`` in the compute dtype, written
        into ``out`` if given (a view is fine), else into a new array.
        """
        self.calls += 1
        slots = (slice(rows),) + (Ellipsis,) + tuple(crop)
        if self._fftw_backend:
            self._plan.execute()  # unnormalised; the 1/L rides on the crop copy below
            cropped, scale = self.signal[slots], 1.0 / prod(self.fft_shape)
        else:
            axes = tuple(range(self.nspatial))
            if self.real:
                full = scipy.fft.irfftn(self.spectrum, s=self.fft_shape, axes=axes,
                                        workers=self.settings.threads)
            else:
                full = scipy.fft.ifftn(self.spectrum, axes=axes, workers=self.settings.threads)
            cropped, scale = _batch_first(full, self.nspatial)[slots], None
        if out is None:
            out = np.empty(cropped.shape, dtype=self.dtype)
        if scale is None:
            out[...] = cropped
        else:
            np.multiply(cropped, scale, out=out)
        return out
