"""Batched N-d FFTs over preallocated buffers: the only code that calls an FFT.

Layout, chosen by measurement (a hand-run timing of the alternatives, not kept
in ``bench``: FFTW, 2 threads, float32, 128 signals of 128x128):

* signals are batch-major ``(*batch, *fft_shape)``, so placing operands and
  cropping results are contiguous copies;
* forward transforms write batch-major spectra ``(*batch, *spectrum_shape)``:
  writing them frequency-major instead made r2c about 1.9x slower (3.5 vs
  1.8 ms), more than the contraction's own blocked transpose costs;
* inverse transforms of batch-shaped results (``y``, ``dx``) read
  frequency-major spectra ``(*spectrum_shape, *batch)``: FFTW reads the
  strided input at little cost (c2r 1.7 vs 1.6 ms), so the contraction's
  batched GEMMs write their per-frequency results straight into the inverse
  transform's buffer.  For the weight gradient (rows ``C_out x C_in``, often
  more of them and, in 1-D, long) the strided read was slow (2-D: 7.2 vs
  3.5 ms; 1-D, 256 x 16384: 13.7 vs 2 ms), so it stays batch-major
  (``frequency_major=False``) and the contraction transposes into it.

The FFT library follows the operands' array library (``fftconv.backends``),
behind the same two classes:

* numpy arrays, setting ``backend="pyfftw"``: one ``pyfftw.FFTW`` object per
  buffer pair, planned once with the configured effort, time limit and
  threads, using and extending the stored wisdom (``fftconv.wisdom``);
* numpy arrays, setting ``backend="scipy"``: ``scipy.fft`` (pocketfft) with
  ``workers=threads``, the fallback for platforms without pyFFTW;
* any other library: its own FFT (``cupy.fft``, that is cuFFT with CuPy's plan
  cache; ``torch.fft``; the standard's ``fft`` extension), through the
  backend's ``rfftn``/``irfftn``.

Zero padding is free: a :class:`ForwardTransform` writes its operand into the
same slots of a zeroed buffer on every call, so the zeros around it stay (the
buffer is zeroed once; a call with fewer rows than the last zeroes only the
placement of the rows the last one filled).  An :class:`InverseTransform`
copies its crop out of the transform's output in one pass that also applies
FFTW's ``1 / prod(L)``; the index tuples of both are built once.

Planning notice: the first plan of a large transform with an effort other
than ``FFTW_ESTIMATE`` makes FFTW time several algorithms, up to
``planning_timelimit`` seconds per transform (six per layer), unless the
stored wisdom already holds it.  Before the first such planning in a process
(a buffer of at least :data:`PLANNING_NOTICE_ELEMENTS` values, a time limit
of at least :data:`PLANNING_NOTICE_SECONDS`, and a ``FFTW_WISDOM_ONLY`` plan,
which costs well under a millisecond, finding no wisdom) one
:class:`PlanningNotice` says so and how to make it cheaper.  FFTW's wisdom
also depends on the buffers' alignment: wisdom from buffers aligned otherwise
does not count, and FFTW plans such a transform afresh too.
"""
from __future__ import annotations

import os
import sys
import warnings
from math import prod
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import runtime, wisdom
from .backends import Arrays
from .config import Settings
from .geometry import half_spectrum_shape

COMPLEX_OF: Dict[np.dtype, np.dtype] = {np.dtype(np.float32): np.dtype(np.complex64),
              np.dtype(np.float64): np.dtype(np.complex128),
              np.dtype(np.complex64): np.dtype(np.complex64),
              np.dtype(np.complex128): np.dtype(np.complex128)}


def signal_bytes(batch: int, fft_shape, dtype) -> int:
    """Bytes of one signal buffer ``(batch, *fft_shape)``."""
    return batch * prod(fft_shape) * np.dtype(dtype).itemsize


def spectrum_bytes(batch: int, fft_shape, dtype) -> int:
    """Bytes of one spectrum buffer for ``batch`` signals of ``dtype``."""
    dtype = np.dtype(dtype)
    return batch * prod(half_spectrum_shape(fft_shape, dtype.kind == "f")) * COMPLEX_OF[dtype].itemsize


def _empty(shape, dtype, arrays: Arrays, fftw: bool):
    if fftw:
        import pyfftw
        return pyfftw.empty_aligned(shape, dtype=dtype)
    return arrays.empty(shape, dtype)


class PlanningNotice(UserWarning):
    """Planning a large FFT with FFTW will take seconds on this first call; given once
    per process, with the settings that make it cheaper (``fftconv.transforms``)."""


#: Values in a transform's larger buffer (batch x FFT size) from which planning it
#: is worth a :class:`PlanningNotice`.  Measured: one float32 r2c transform planned
#: with FFTW_MEASURE (limit 2 s, no wisdom, a fresh process each) on a 2-core VM took
#: 0.06-0.15 s up to 2**21 values (2 x 64**3, 8 x 64**3), 0.12-0.46 s at 2**22
#: (16 x 64**3, 2 x 128**3; 2-D batches plan faster), 0.65-0.96 s at 2**23 and
#: 1.3-2.2 s at 2**25: from 2**23 a layer's six transforms take seconds.  (At
#: 2**22 they take one to three seconds in all, and the bench's default suite,
#: whose largest transform is 2**22 values, would show the notice on every fresh
#: machine.)
PLANNING_NOTICE_ELEMENTS = 1 << 23
#: No notice when ``planning_timelimit`` is below this: six transforms then plan
#: within about a second.
PLANNING_NOTICE_SECONDS = 0.25
_noticed = False             # a PlanningNotice was given in this process


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside the fftconv package, so that a
    warning points at the user's call that planned (``warnings.warn``'s caller is 1)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _planning_notice(shape, settings: Settings) -> str:
    return (f"fftconv: planning a new FFT of {'x'.join(map(str, shape))} values with "
            f"{settings.planner_effort} may take up to {settings.planning_timelimit:g} s per "
            f"transform (a layer needs six) on this first call: FFTW times several "
            f"algorithms for each new shape.  The plans are saved as FFTW wisdom in "
            f"fftconv's cache directory, so later runs reuse them at once.  To make it "
            f"cheaper: fftconv.configure(planner_effort=\"FFTW_ESTIMATE\") (no timing; "
            f"steps may run a little slower) or a smaller planning_timelimit (seconds per "
            f"transform), or set FFTCONV_PLANNER_EFFORT=FFTW_ESTIMATE or "
            f"FFTCONV_PLANNING_TIME before starting.  (Shown once per process.)")


def _fftw(src, dst, nspatial, direction, settings: Settings, destroy_input: bool,
          effort=None, axes=None):
    """A planned ``pyfftw.FFTW`` over the last ``nspatial`` axes of fixed buffers, or
    over ``axes`` when given (``effort``: the planner effort, default the setting's);
    the first planning of a large transform not in the wisdom gives a
    :class:`PlanningNotice`."""
    global _noticed
    import pyfftw
    effort = effort or settings.planner_effort
    flags = (effort,) + (("FFTW_DESTROY_INPUT",) if destroy_input else ())
    where = dict(axes=tuple(range(-nspatial, 0)) if axes is None else tuple(axes),
                 direction=direction,
                 threads=runtime.fftw_threads(int(settings.threads)))
    with wisdom.planner_lock:
        wisdom.load_once()
        large = max(src, dst, key=lambda a: a.size)
        if (not _noticed and effort != "FFTW_ESTIMATE" and large.size >= PLANNING_NOTICE_ELEMENTS
                and settings.planning_timelimit >= PLANNING_NOTICE_SECONDS):
            try:   # the wisdom holds it: no planning, no notice
                return pyfftw.FFTW(src, dst, flags=flags + ("FFTW_WISDOM_ONLY",), **where)
            except RuntimeError:
                _noticed = True
                warnings.warn(_planning_notice(large.shape, settings), PlanningNotice,
                              stacklevel=_caller_stacklevel())
        plan = pyfftw.FFTW(src, dst, flags=flags, planning_timelimit=settings.planning_timelimit,
                           **where)
        if effort != "FFTW_ESTIMATE":
            wisdom.planned()
    return plan


def _cached_index(cache: dict, where, rows: tuple, make) -> tuple:
    """``make()``, built once per ``(where, rows)`` and kept in ``cache``: the engines
    pass the same placement and crop objects on every call, so they are keyed by
    identity (slices are not hashable) and kept alive beside the index, so that the
    identity cannot be reused by another object.  Bounded: a caller passing new
    objects on every call refills it."""
    key = (id(where),) + rows
    hit = cache.get(key)
    if hit is not None and hit[0] is where:
        return hit[1]
    if len(cache) >= 64:
        cache.clear()
    index = make()
    cache[key] = (where, index)
    return index


class _Transform:
    """Shared set-up: shapes, dtypes, counters, buffers on ``arrays``' device."""

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings, arrays: Arrays,
                 frequency_major: bool = False, spectrum_buffer: bool = True,
                 signal_buffer: bool = True):
        self.frequency_major = frequency_major
        self.arrays = arrays
        #: FFTW plans on these buffers (numpy arrays, pyFFTW backend); else the library's FFT
        self.fftw = arrays.fftw and settings.backend == "pyfftw"
        self.dtype = np.dtype(dtype)
        self.real = self.dtype.kind == "f"
        self.nspatial = len(fft_shape)
        self.fft_shape = tuple(fft_shape)
        self.batch_shape = tuple(batch_shape)
        self.settings = settings
        self.calls = 0
        self.axes = tuple(range(-self.nspatial, 0))
        self.signal = (_empty(self.batch_shape + self.fft_shape, self.dtype, arrays, self.fftw)
                       if signal_buffer else None)
        spec_shape = half_spectrum_shape(fft_shape, self.real)
        spec_shape = (spec_shape + self.batch_shape if self.frequency_major
                      else self.batch_shape + spec_shape)
        #: The spectrum buffer; ``None`` for a forward transform whose library returns
        #: a new spectrum (scipy, CuPy): that array is the buffer, so the workspace
        #: counts it once, not twice.
        self.spectrum = (_empty(spec_shape, COMPLEX_OF[self.dtype], arrays, self.fftw)
                         if spectrum_buffer or self.fftw else None)

    @property
    def nbytes(self) -> int:
        """Bytes of the signal and spectrum buffers."""
        rows = prod(self.batch_shape)
        return signal_bytes(rows, self.fft_shape, self.dtype) + spectrum_bytes(
            rows, self.fft_shape, self.dtype)

    def _plan_fftw(self, effort=None):
        """Plan this transform's ``pyfftw.FFTW`` (:meth:`_fftw_args`)."""
        src, dst, direction, destroy_input = self._fftw_args()
        self._generation = runtime.generation()
        self._plan = _fftw(src, dst, self.nspatial, direction, self.settings, destroy_input,
                           effort)

    def _replan_after_fork(self):
        """Plans made with threads before a fork are re-planned in the child, on one
        thread and without touching the buffers (``FFTW_ESTIMATE``): their OpenMP
        threads are gone (``fftconv.runtime``)."""
        if self._generation != runtime.generation() and self.settings.threads > 1:
            self._plan_fftw(effort="FFTW_ESTIMATE")

    def _execute(self):
        """Run the FFTW plan (:meth:`_replan_after_fork` first)."""
        self._replan_after_fork()
        self._plan.execute()


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
    arrays : Arrays
        The operands' array library and device (``fftconv.backends``).
    """

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings, arrays: Arrays):
        super().__init__(batch_shape, fft_shape, dtype, settings, arrays,
                         spectrum_buffer=arrays.fft_into)
        if self.fftw:
            self._plan_fftw()
        self.arrays.copy_into(self.signal, 0)  # after planning: FFTW_MEASURE scribbles on them
        #: Rows from which the whole buffer is known to hold zeros (:meth:`__call__`).
        self._zero_from = 0
        self._placed: tuple = ()  # the placement of the last call
        self._slots: Dict[tuple, Tuple[Any, tuple]] = {}

    def _fftw_args(self) -> tuple:
        return self.signal, self.spectrum, "FFTW_FORWARD", False

    def _rows_at(self, start, stop, placement) -> tuple:
        """The buffer's slots of rows ``start:stop`` at ``placement``."""
        return _cached_index(self._slots, placement, (start, stop), lambda: (
            (slice(start, stop),) + (slice(None),) * (len(self.batch_shape) - 1)
            + tuple(placement)))

    def __call__(self, operand, placement):
        """Transform ``operand`` (``(*batch, *spatial)``) written at ``placement``.

        ``operand`` may have fewer rows than the buffer on its first axis (the
        last chunk of a batch); the remaining rows hold zeros.  Only the
        placement is written: the zeros around it were written once, and rows
        below the operand's are zeroed only where an earlier call left data
        (placements never change between calls of one transform's user, so
        zeroing the placement of those rows is enough).  Returns the spectrum
        ``(*batch, *spectrum_shape)``; it may live in this object's buffer,
        overwritten by the next call.
        """
        rows = operand.shape[0]
        if self._zero_from and placement is not self._placed and placement != self._placed:
            self.arrays.copy_into(self.signal, 0)  # a new placement: clear the old one
            self._zero_from = 0
        self._placed = placement
        self.arrays.put(self.signal, self._rows_at(0, rows, placement), operand)
        if rows < self._zero_from:
            self.arrays.put(self.signal, self._rows_at(rows, self._zero_from, placement), 0)
        self._zero_from = rows
        self.calls += 1
        if self.fftw:
            self._execute()
            return self.spectrum
        fft = self.arrays.rfftn if self.real else self.arrays.fftn
        return fft(self.signal, self.axes, self.settings.threads, out=self.spectrum)


class InverseTransform(_Transform):
    """Inverse-transform a batch of spectra and crop the result.

    The caller writes the spectra into :attr:`spectrum`, frequency-major
    ``(*spectrum_shape, *batch)`` (the default) or batch-major ``(*batch,
    *spectrum_shape)`` with ``frequency_major=False``, then calls the object
    with the crop slices.
    """

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings, arrays: Arrays,
                 frequency_major: bool = True):
        super().__init__(batch_shape, fft_shape, dtype, settings, arrays, frequency_major)
        if self.fftw:
            self._plan_fftw()
        #: FFTW's results are unnormalised: the crop's copy applies ``1 / prod(L)``.
        self._scale = 1.0 / prod(self.fft_shape) if self.fftw else None
        self._slots: Dict[tuple, Tuple[Any, tuple]] = {}

    def _fftw_args(self) -> tuple:
        return self._batch_major_spectrum(), self.signal, "FFTW_BACKWARD", True

    def _batch_major_spectrum(self):
        """The spectrum buffer viewed ``(*batch, *freq)``."""
        if not self.frequency_major:
            return self.spectrum
        return self.arrays.moveaxis(self.spectrum, tuple(range(self.nspatial)),
                                    tuple(range(-self.nspatial, 0)))

    def __call__(self, crop, rows=None, out=None):
        """Inverse transform of :attr:`spectrum`, cropped and scaled by ``1 / prod(L)``.

        Returns ``(rows, *batch[1:], *cropped)`` in the compute dtype, written
        into ``out`` if given (a view is fine), else into a new array.
        """
        self.calls += 1
        slots = self._crop_slots(crop, rows)
        arrays = self.arrays
        if self.fftw:
            self._execute()  # unnormalised; the 1/L rides on the crop copy below
            cropped = arrays.at(self.signal, slots)
        else:
            spectrum, threads = self._batch_major_spectrum(), self.settings.threads
            full = (arrays.irfftn(spectrum, self.fft_shape, self.axes, threads) if self.real
                    else arrays.ifftn(spectrum, self.axes, threads))
            cropped = arrays.at(full, slots)
        if out is None:
            out = arrays.empty(cropped.shape, self.dtype)
        if self._scale is None:
            arrays.copy_into(out, cropped)
        else:
            arrays.multiply(cropped, self._scale, out=out)
        return out

    def _crop_slots(self, crop, rows) -> tuple:
        """``(rows, *batch[1:], *crop)`` as an index."""
        return _cached_index(self._slots, crop, (rows,), lambda: (
            (slice(rows),) + (slice(None),) * (len(self.batch_shape) - 1) + tuple(crop)))


def prunable(batch_shape, fft_shape, crop, dtype, settings: Settings, arrays: Arrays) -> bool:
    """Whether a :class:`PrunedInverse` serves this inverse transform: FFTW plans
    (explicit buffers), two or more axes, a crop of plain slices that keeps at most
    half of the points on the axes before the last, and stage buffers that take no
    more bytes than the full signal buffer they replace (so the engine's workspace
    bound still holds)."""
    return _prunes(PrunedInverse, batch_shape, fft_shape, crop, dtype, settings, arrays)


def _prunes(pruned, batch_shape, fft_shape, region, dtype, settings: Settings,
            arrays: Arrays) -> bool:
    """Whether the pruned transform class ``pruned`` serves a transform whose signal
    part is ``region`` (see :func:`prunable`)."""
    return (arrays.fftw and settings.backend == "pyfftw"
            and pruned_extent(pruned, batch_shape, fft_shape, region, dtype) is not None)


def pruned_extent(pruned, batch_shape, fft_shape, region, dtype) -> Optional[List[int]]:
    """The points per axis that the pruned transform class ``pruned`` keeps of a
    transform whose signal part is ``region``, or None when its shape does not
    qualify (see :func:`prunable`; the cost model asks this without buffers)."""
    if len(fft_shape) < 2 or not all(isinstance(c, slice) and c.step in (None, 1)
                                     for c in region):
        return None
    kept = [len(range(*c.indices(n))) for c, n in zip(region, fft_shape)]
    if prod(kept[:-1]) * 2 > prod(fft_shape[:-1]):
        return None
    fits = pruned.stage_bytes(batch_shape, fft_shape, kept, dtype) <= signal_bytes(
        prod(batch_shape), fft_shape, dtype)
    return kept if fits else None


#: Byte boundary on which each stage buffer of a :class:`PrunedInverse` starts (the
#: widest SIMD alignment FFTW uses, AVX-512's).
STAGE_ALIGNMENT = 64


def _aligned(nbytes: int) -> int:
    return -(-nbytes // STAGE_ALIGNMENT) * STAGE_ALIGNMENT


def _carved_bytes(shapes, dtypes) -> int:
    """Bytes :func:`_carve` lays ``shapes`` of ``dtypes`` out in."""
    return sum(_aligned(prod(shape) * np.dtype(dtype).itemsize)
               for shape, dtype in zip(shapes, dtypes))


def _carve(buffer, shapes, dtypes) -> list:
    """Arrays of ``shapes`` and ``dtypes`` laid one after another in ``buffer`` (a
    contiguous, aligned host array of at least :func:`_carved_bytes`),
    each on a :data:`STAGE_ALIGNMENT` boundary."""
    raw, start, views = buffer.reshape(-1).view("u1"), 0, []  # bytes
    for shape, dtype in zip(shapes, dtypes):
        size = prod(shape) * np.dtype(dtype).itemsize
        views.append(raw[start:start + size].view(dtype).reshape(shape))
        start += _aligned(size)
    return views


class PrunedInverse(InverseTransform):
    """An inverse transform whose result is cropped to a small corner (a weight
    gradient: ``k`` of ``L`` points per axis), computed one axis at a time so that
    each axis after the first transforms only the lines the crop keeps.

    The caller writes batch-major spectra into :attr:`spectrum`.  A call runs, for
    each axis but the last, a complex inverse transform along it in place, then
    copies the kept points of that axis into the next, smaller stage buffer; the
    last axis is a complex-to-real (or complex) inverse transform into a real
    buffer ``(*batch, k_0, ..., k_{d-2}, L_{d-1})``, whose crop is copied out with
    the ``1 / prod(L)`` scale.  On ``d`` axes of ``L`` points with ``k`` kept, the
    work is about ``(1 + k/L + (k/L)**2 + ...) / d`` of the whole transform.  FFTW
    plans only (:func:`prunable`).
    """

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings, arrays: Arrays,
                 crop):
        _Transform.__init__(self, batch_shape, fft_shape, dtype, settings, arrays,
                            frequency_major=False)
        self.crop = tuple(crop)
        nb, self.kept = len(self.batch_shape), [
            len(range(*c.indices(n))) for c, n in zip(self.crop, self.fft_shape)]
        #: Stage buffers: after each axis but the last, the spectrum with that axis cut;
        #: then the result.  They are carved out of the signal buffer, which the whole
        #: transform would fill: the transform takes the same bytes either way.
        shapes = self._stage_shapes(self.batch_shape, self.fft_shape, self.kept, self.real)
        views = _carve(self.signal, shapes, self._stage_dtypes(len(shapes), self.dtype))
        self.stages, self.result = views[:-1], views[-1]
        self._cuts = [(slice(None),) * (nb + i) + (self.crop[i],) for i in range(self.nspatial - 1)]
        self._scale = 1.0 / prod(self.fft_shape)
        self._slots = {}
        self._plan_fftw()

    @staticmethod
    def _stage_shapes(batch_shape, fft_shape, kept, real: bool) -> list:
        """Shapes of the stage buffers, the last one the real (or complex) result."""
        spec = list(half_spectrum_shape(tuple(fft_shape), real))
        shapes = []
        for i in range(len(fft_shape) - 1):
            spec[i] = kept[i]
            shapes.append(tuple(batch_shape) + tuple(spec))
        return shapes + [tuple(batch_shape) + tuple(kept[:-1]) + (fft_shape[-1],)]

    @staticmethod
    def _stage_dtypes(n: int, dtype) -> list:
        """Complex stages, then the result in ``dtype``."""
        return [COMPLEX_OF[np.dtype(dtype)]] * (n - 1) + [np.dtype(dtype)]

    @classmethod
    def stage_bytes(cls, batch_shape, fft_shape, kept, dtype) -> int:
        """Bytes of the stage buffers and the result buffer, each starting on a
        :data:`STAGE_ALIGNMENT` boundary (:func:`_carve`)."""
        shapes = cls._stage_shapes(batch_shape, fft_shape, kept, np.dtype(dtype).kind == "f")
        return _carved_bytes(shapes, cls._stage_dtypes(len(shapes), dtype))

    def _plan_fftw(self, effort=None):
        """One plan per axis: in place along each axis but the last, then the last axis
        from the last stage buffer into the result."""
        self._generation = runtime.generation()
        nb = len(self.batch_shape)
        plans, src = [], self.spectrum
        for i, stage in enumerate(self.stages):
            plans.append(_fftw(src, src, 1, "FFTW_BACKWARD", self.settings, False, effort,
                               axes=(nb + i,)))
            src = stage
        plans.append(_fftw(src, self.result, 1, "FFTW_BACKWARD", self.settings, True, effort,
                           axes=(nb + self.nspatial - 1,)))
        self._plans = plans

    def __call__(self, crop, rows=None, out=None):
        """As :meth:`InverseTransform.__call__`; ``crop`` must be the one given at
        construction."""
        if tuple(crop) != self.crop:
            raise ValueError(f"PrunedInverse: built for crop {self.crop}, called with {crop}")
        self.calls += 1
        self._replan_after_fork()
        arrays, src = self.arrays, self.spectrum
        for plan, stage, cut in zip(self._plans, self.stages, self._cuts):
            plan.execute()
            arrays.copy_into(stage, arrays.at(src, cut))
            src = stage
        self._plans[-1].execute()
        slots = _cached_index(self._slots, crop, (rows,), lambda: (
            (slice(rows),) + (slice(None),) * (len(self.batch_shape) - 1)
            + (slice(None),) * (self.nspatial - 1) + (self.crop[-1],)))
        cropped = arrays.at(self.result, slots)
        if out is None:
            out = arrays.empty(cropped.shape, self.dtype)
        arrays.multiply(cropped, self._scale, out=out)
        return out


def prunable_forward(batch_shape, fft_shape, placement, dtype, settings: Settings,
                     arrays: Arrays) -> bool:
    """Whether a :class:`PrunedForward` serves this forward transform: as
    :func:`prunable`, for an operand placed at ``placement`` (plain slices)."""
    return _prunes(PrunedForward, batch_shape, fft_shape, placement, dtype, settings, arrays)


class PrunedForward(ForwardTransform):
    """A forward transform of operands that fill a small corner of the grid (a
    kernel: ``k`` of ``L`` points per axis), computed one axis at a time from the
    last, so that each axis but the first transforms only the lines that hold data.

    Stage ``j`` holds the data with the axes before ``j`` cut to the operand's
    extent and axis ``j`` zero-padded to ``L_j``; the transform along the last axis
    reads the placed operand, and each transform along axis ``j`` writes into the
    operand's slots of stage ``j - 1`` (out of place: the zeros around them stay).
    The first axis is transformed in place in the spectrum buffer, whose slots
    outside the operand's are zeroed on every call.  The stages are carved out of
    the signal buffer, so the transform takes the bytes of the whole one.  Work:
    about ``(1 + k/L + (k/L)**2 + ...)/d`` of the whole, plus zeroing the spectrum
    outside the operand's first-axis extent.  FFTW plans only
    (:func:`prunable_forward`); the operand fills every row.
    """

    def __init__(self, batch_shape, fft_shape, dtype, settings: Settings, arrays: Arrays,
                 placement):
        _Transform.__init__(self, batch_shape, fft_shape, dtype, settings, arrays)
        self.placement = tuple(placement)
        nb, d = len(self.batch_shape), self.nspatial
        self.kept = [len(range(*c.indices(n))) for c, n in zip(self.placement, self.fft_shape)]
        shapes = self._stage_shapes(self.batch_shape, self.fft_shape, self.kept, self.real)
        #: ``stages[0]``: the operand's lines, full along the last axis; ``stages[i]``:
        #: before the transform along axis ``d - 1 - i``.  The spectrum is the last.
        self.stages = (_carve(self.signal, shapes, self._stage_dtypes(len(shapes), self.dtype))
                       + [self.spectrum])
        self._operand_slots = ((slice(None),) * (nb + d - 1) + (self.placement[-1],))
        self._targets = [self.stages[i + 1][(slice(None),) * (nb + d - 2 - i)
                                            + (self.placement[d - 2 - i],)]
                         for i in range(d - 1)]
        first = self.placement[0].indices(self.fft_shape[0])
        self._clear = [(slice(None),) * nb + (cut,) for cut in
                       (slice(0, first[0]), slice(first[1], self.fft_shape[0]))
                       if cut.stop > cut.start]
        self._plan_fftw()
        for stage in self.stages[:-1]:
            self.arrays.copy_into(stage, 0)  # after planning: FFTW_MEASURE scribbles on them

    @staticmethod
    def _stage_shapes(batch_shape, fft_shape, kept, real: bool) -> list:
        """Shapes of the carved stages: the operand's lines, then the input of each
        axis's transform from ``d - 2`` down to ``1``."""
        d = len(fft_shape)
        spec = half_spectrum_shape(tuple(fft_shape), real)
        shapes = [tuple(batch_shape) + tuple(kept[:-1]) + (fft_shape[-1],)]
        for j in range(d - 2, 0, -1):
            shapes.append(tuple(batch_shape) + tuple(kept[:j]) + tuple(spec[j:]))
        return shapes

    @staticmethod
    def _stage_dtypes(n: int, dtype) -> list:
        """The operand's lines in ``dtype``, then complex stages."""
        return [np.dtype(dtype)] + [COMPLEX_OF[np.dtype(dtype)]] * (n - 1)

    @classmethod
    def stage_bytes(cls, batch_shape, fft_shape, kept, dtype) -> int:
        """Bytes of the carved stages, each on a :data:`STAGE_ALIGNMENT` boundary."""
        shapes = cls._stage_shapes(batch_shape, fft_shape, kept, np.dtype(dtype).kind == "f")
        return _carved_bytes(shapes, cls._stage_dtypes(len(shapes), dtype))

    def _plan_fftw(self, effort=None):
        """One plan per axis, from the last: out of place into the next stage's slots,
        the first axis in place in the spectrum."""
        self._generation = runtime.generation()
        nb, d = len(self.batch_shape), self.nspatial
        plans = [_fftw(self.stages[i], self._targets[i], 1, "FFTW_FORWARD", self.settings,
                       False, effort, axes=(nb + d - 1 - i,)) for i in range(d - 1)]
        plans.append(_fftw(self.spectrum, self.spectrum, 1, "FFTW_FORWARD", self.settings,
                           False, effort, axes=(nb,)))
        self._plans = plans

    def __call__(self, operand, placement):
        """As :meth:`ForwardTransform.__call__` for an operand of all rows at the
        placement given at construction."""
        if tuple(placement) != self.placement or operand.shape[0] != self.batch_shape[0]:
            raise ValueError(f"PrunedForward: built for all {self.batch_shape[0]} rows at "
                             f"{self.placement}, called with {operand.shape[0]} at {placement}")
        self.calls += 1
        self._replan_after_fork()
        arrays = self.arrays
        arrays.put(self.stages[0], self._operand_slots, operand)
        for slots in self._clear:
            arrays.put(self.spectrum, slots, 0)
        for plan in self._plans:
            plan.execute()
        return self.spectrum
