"""The channel products as compiled (numba) kernels on the transforms' own layout.

:class:`CompiledProducts` has the interface of
:class:`fftconv.contraction.GemmProducts` and its semantics exactly (``K =
conj(FFT(conj w))``; per frequency and group ``Y[n, o] = sum_c X[n, c] K[o, c]``,
``DX[n, c] = sum_o DY[n, o] conj(K[o, c])``, ``DW[o, c] = sum_n conj(DY[n, o])
X[n, c]`` summed over the batch), but reads the forward transforms' batch-major
spectra ``(rows, cols, F)`` where they lie and writes ``Y`` and ``DX``
batch-major ``(rows, cols, F)`` too (:attr:`CompiledProducts.frequency_major`
is false, so the inverse transforms read them as they are): no block
transposes at all.  ``DW`` is batch-major ``(C_out, Cg, F)``, as always.

The kernels: NNPACK's "tuple GEMM" (``src/convolution-output.c``) in numba.

* **Frequencies in the SIMD lanes.**  Every operand is planar (real and imaginary
  parts apart), so the innermost loop is :data:`LANES` independent complex
  multiply-adds, four real FMAs each, over contiguous floats: LLVM vectorises it
  (16 float32 lanes are one AVX-512 register, 16 float64 lanes two).  ``K`` is
  kept planar and blocked, ``[g][task][o][c][re|im][TASK_LANES]``, made once per
  weight update by :meth:`CompiledProducts.kernel`; each task's rows of ``X`` and
  ``DY`` are made planar in a per-call scratch as they are read.
* **Register blocking.**  One call of the micro-kernel (``_mk4``; ``_mk1`` for the
  channels left over) computes four output channels of one row over the whole
  channel sum: each load of the row's operand feeds four complex multiply-adds,
  and the eight accumulators stay in registers for the whole sum (they are a
  fresh stack array of the call, which LLVM can prove aliases nothing; the row
  views are made without bounds arithmetic, ``_at``, so the loads are plain
  vector loads and no runtime alias check or scalar fallback is left).
* **Cache blocking.**  A *task* is one group and :data:`TASK_LANES` consecutive
  frequencies: its operands are read from the spectra, and its results written,
  in runs of that many complex values per (row, channel), and the next task's
  runs are prefetched.  Within a task each block of four output channels walks
  the sub-blocks of :data:`LANES` frequencies outermost and the rows innermost,
  so that sub-block's slice of ``K`` stays in L1 over the rows; the results are
  then stored as whole runs.
* **Threads.**  The tasks (groups x frequency runs) are split into ``threads``
  contiguous shares, run at once by ``runtime.run_shares`` (the kernels release
  the GIL).  No numba threading layer is used, so ``threads`` is exact, calls from
  several threads at once are safe and a forked child works.
* **Exactness.**  Only ``fastmath={"contract"}``: multiply-adds are fused (one
  rounding instead of two, never worse), nothing is reordered and no flag assumes
  finite values, so a NaN or Inf spreads exactly as in the GEMMs (over its own
  sample's outputs, and over ``DW``).  Errors stay within CONVENTIONS §4
  (``tests/test_compiled.py``: 1e-12 and 1e-5 of the largest magnitude).  The
  results do not depend on ``threads`` (bit for bit).

Memory.  ``K`` is as large as the GEMMs' (the same complex values, planar), plus
the padding of the last task of each group to :data:`TASK_LANES` frequencies:
negligible for thousands of frequencies, large for a handful (at ``F = 1`` it
is 64 times the spectrum).  A call's scratch is one task's planar rows.

Compilation.  numba is optional (the ``compiled`` extra); this module imports
without it (:data:`AVAILABLE` says whether it is installed) and imports numba
only on first use.  The kernels are compiled with explicit signatures for one
precision at a time, the first time a :class:`CompiledProducts` of that
precision is made, with ``cache=True``: numba keeps the machine code in its
cache directory (``__pycache__`` beside this file, or ``NUMBA_CACHE_DIR``), so
only the first process on a machine compiles (measured on the 2-core reference
VM at a load average of 3: 10.9 s for float32, 10.2 s for float64); later
processes load both in about a second (1.3 s, numba's own import included).
When it is about to compile, it says so once per process with a
:class:`CompileNotice` (a ``UserWarning``) naming the way to do it ahead of
time: :func:`warm_up` (``python -c "import fftconv.compiled as c;
c.warm_up()"``, e.g. in an image build).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
import time
import warnings
from typing import Any, Dict, Tuple

import numpy as np

from . import runtime


def _installed() -> bool:
    """Whether numba >= 0.60 is installed (without importing it)."""
    try:
        if importlib.util.find_spec("numba") is None:
            return False
        major, minor = importlib.metadata.version("numba").split(".")[:2]
        return (int(major), int(minor)) >= (0, 60)
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return False


#: Whether numba (>= 0.60) is installed, so that :class:`CompiledProducts` can work.
#: Found without importing numba; the first :class:`CompiledProducts` imports it.
AVAILABLE: bool = _installed()

#: Frequencies per micro-kernel call: the SIMD lanes of the innermost loop (one
#: AVX-512 register of float32, two of float64).  A compile-time constant.
LANES = 16
#: Sub-blocks of :data:`LANES` frequencies per task: the runs read from and written
#: to the spectra are ``LANES * BLOCK_LANES`` complex values long.  Measured on the
#: 2-D bench case (N=8, 16->16, 128x128 "same", F=10512, float32, one thread), min
#: of 16x3 calls alternating, on the loaded 2-core VM: forward 8.6 / 10.1 / 13.4 ms
#: and backward 18.1 / 17.6 / 23.6 ms for 2 / 4 / 8 (a load average of 6; a quieter
#: run put 4 at 6.1 and 11.1 ms).
BLOCK_LANES = 4
#: Frequencies per task.
TASK_LANES = LANES * BLOCK_LANES
#: Fewest complex multiply-adds in a call for its tasks to be shared out over
#: threads (below it, handing a share to the pool costs more than it saves).
#: Measured: forward products of N x C -> C x F, complex64, two threads against
#: one (min of 20 each, alternating, 2-core VM at a load average of 1.5):
#: 32768 multiply-adds 1.57x as long, 131072 1.49x, 524288 1.28x, 2097152
#: 0.96x, 8388608 0.64x.
PARALLEL_MIN_MACS = 1 << 21


class CompileNotice(UserWarning):
    """numba is compiling fftconv's kernels for this machine on this first use (seconds,
    once: they are cached); :func:`warm_up` does it ahead of time."""


_lock = threading.Lock()
_noticed = False
_kernels: Dict[np.dtype, Any] = {}      # float dtype -> (products, pack) dispatchers
_jit: Dict[str, Any] = {}               # helper dispatchers, made once


# -- the kernels (plain Python until _compile makes them numba functions) ---------------------
# Names the kernels call are module globals that _compile() binds to numba functions.
#
# Planar rows: a task's TL = LANES * BLOCK_LANES frequencies of one (row, channel) of an
# operand are ``W = 2 * TL`` floats, the TL real parts then the TL imaginary parts.
# Sub-block ``j`` (LANES frequencies) of a row at ``p``: real parts at ``p + j * LANES``,
# imaginary parts at ``p + TL + j * LANES``.
_stack_floats: Any = None
_at: Any = None
_prefetch: Any = None
_ahead: Any = None
_mk4: Any = None
_mk1: Any = None
_planar: Any = None
_store: Any = None


def _py_mk4(a, ao, a_ss, b, bo, b_sq, b_ss, s_count, res, ro, j, conj_b):
    """``res[q] = sum_s A(s) B(q, s)`` for four ``q``, on sub-block ``j``.

    ``A(s)`` is the planar row at ``a[ao + s * a_ss]``, ``B(q, s)`` the one at
    ``b[bo + q * b_sq + s * b_ss]``, conjugated if ``conj_b``; result ``q`` goes
    to sub-block ``j`` of the planar row ``res[ro + q * W]``.  The rows are views made
    without bounds arithmetic (``_at``) and indexed by the loop counter plus
    constants, so LLVM sees contiguous vector loads.  The accumulators are a
    fresh stack array of this call (``_stack_floats``): LLVM sees that nothing
    else can alias them, so the loop needs no runtime alias checks (one
    accumulator array shared by all the calls of a kernel defeats its capture
    tracking, and every loop then carries a scalar fallback).
    """
    L = LANES
    TL = LANES * BLOCK_LANES
    W = 2 * TL
    acc = _stack_floats(res)
    for i in range(8 * L):
        acc[i] = 0.0
    if conj_b:
        for s in range(s_count):
            x = _at(a, ao + s * a_ss + j * L)
            k0 = _at(b, bo + s * b_ss + j * L)
            k1 = _at(b, bo + b_sq + s * b_ss + j * L)
            k2 = _at(b, bo + 2 * b_sq + s * b_ss + j * L)
            k3 = _at(b, bo + 3 * b_sq + s * b_ss + j * L)
            for f in range(L):
                xr = x[f]
                xi = x[TL + f]
                acc[f] = (acc[f] + xr * k0[f]) + xi * k0[TL + f]
                acc[1 * L + f] = (acc[1 * L + f] + xi * k0[f]) - xr * k0[TL + f]
                acc[2 * L + f] = (acc[2 * L + f] + xr * k1[f]) + xi * k1[TL + f]
                acc[3 * L + f] = (acc[3 * L + f] + xi * k1[f]) - xr * k1[TL + f]
                acc[4 * L + f] = (acc[4 * L + f] + xr * k2[f]) + xi * k2[TL + f]
                acc[5 * L + f] = (acc[5 * L + f] + xi * k2[f]) - xr * k2[TL + f]
                acc[6 * L + f] = (acc[6 * L + f] + xr * k3[f]) + xi * k3[TL + f]
                acc[7 * L + f] = (acc[7 * L + f] + xi * k3[f]) - xr * k3[TL + f]
    else:
        for s in range(s_count):
            x = _at(a, ao + s * a_ss + j * L)
            k0 = _at(b, bo + s * b_ss + j * L)
            k1 = _at(b, bo + b_sq + s * b_ss + j * L)
            k2 = _at(b, bo + 2 * b_sq + s * b_ss + j * L)
            k3 = _at(b, bo + 3 * b_sq + s * b_ss + j * L)
            for f in range(L):
                xr = x[f]
                xi = x[TL + f]
                acc[f] = (acc[f] + xr * k0[f]) - xi * k0[TL + f]
                acc[1 * L + f] = (acc[1 * L + f] + xr * k0[TL + f]) + xi * k0[f]
                acc[2 * L + f] = (acc[2 * L + f] + xr * k1[f]) - xi * k1[TL + f]
                acc[3 * L + f] = (acc[3 * L + f] + xr * k1[TL + f]) + xi * k1[f]
                acc[4 * L + f] = (acc[4 * L + f] + xr * k2[f]) - xi * k2[TL + f]
                acc[5 * L + f] = (acc[5 * L + f] + xr * k2[TL + f]) + xi * k2[f]
                acc[6 * L + f] = (acc[6 * L + f] + xr * k3[f]) - xi * k3[TL + f]
                acc[7 * L + f] = (acc[7 * L + f] + xr * k3[TL + f]) + xi * k3[f]
    out = _at(res, ro + j * L)
    for f in range(L):
        out[f] = acc[f]
        out[TL + f] = acc[1 * L + f]
        out[W + f] = acc[2 * L + f]
        out[W + TL + f] = acc[3 * L + f]
        out[2 * W + f] = acc[4 * L + f]
        out[2 * W + TL + f] = acc[5 * L + f]
        out[3 * W + f] = acc[6 * L + f]
        out[3 * W + TL + f] = acc[7 * L + f]


def _py_mk1(a, ao, a_ss, b, bo, b_ss, s_count, res, ro, j, conj_b):
    """:func:`_py_mk4` for one ``q``."""
    L = LANES
    TL = LANES * BLOCK_LANES
    W = 2 * TL
    acc = _stack_floats(res)
    for i in range(2 * L):
        acc[i] = 0.0
    if conj_b:
        for s in range(s_count):
            x = _at(a, ao + s * a_ss + j * L)
            k0 = _at(b, bo + s * b_ss + j * L)
            for f in range(L):
                xr = x[f]
                xi = x[TL + f]
                acc[f] = (acc[f] + xr * k0[f]) + xi * k0[TL + f]
                acc[1 * L + f] = (acc[1 * L + f] + xi * k0[f]) - xr * k0[TL + f]
    else:
        for s in range(s_count):
            x = _at(a, ao + s * a_ss + j * L)
            k0 = _at(b, bo + s * b_ss + j * L)
            for f in range(L):
                xr = x[f]
                xi = x[TL + f]
                acc[f] = (acc[f] + xr * k0[f]) - xi * k0[TL + f]
                acc[1 * L + f] = (acc[1 * L + f] + xr * k0[TL + f]) + xi * k0[f]
    out = _at(res, ro + j * L)
    for f in range(L):
        out[f] = acc[f]
        out[TL + f] = acc[1 * L + f]


def _py_planar(row, dst, d0, count, keep_row, keep, negate):
    """The interleaved complex ``row`` (``count`` values) into the planar row at
    ``dst[d0]`` (imaginary parts negated if ``negate``; lanes past ``count``
    zeroed); a copy of ``row`` into ``keep_row`` if ``keep``."""
    TL = LANES * BLOCK_LANES
    out = _at(dst, d0)
    if negate:
        for f in range(count):
            out[f] = row[2 * f]
            out[TL + f] = -row[2 * f + 1]
    else:
        for f in range(count):
            out[f] = row[2 * f]
            out[TL + f] = row[2 * f + 1]
    for f in range(count, TL):
        out[f] = 0.0
        out[TL + f] = 0.0
    if keep:
        for f in range(2 * count):
            keep_row[f] = row[f]


def _py_store(acc, q, row, count, conj):
    """Planar result ``q`` of ``acc`` (``count`` lanes) into the interleaved complex
    ``row``, conjugated if ``conj``."""
    TL = LANES * BLOCK_LANES
    src = _at(acc, q * 2 * TL)
    if conj:
        for f in range(count):
            row[2 * f] = src[f]
            row[2 * f + 1] = -src[TL + f]
    else:
        for f in range(count):
            row[2 * f] = src[f]
            row[2 * f + 1] = src[TL + f]


def _py_ahead(row, start, stop):
    """Prefetch ``row[start:stop]`` (a 1-D float array), one hint per 64-byte line."""
    step = 64 // row.itemsize
    for i in range(start, min(stop, row.shape[0]), step):
        _prefetch(row, i)


def _py_products(x, dy, kp, y, dx, dw, x_keep, dy_keep, dims, t0, t1):
    """Tasks ``t0 <= t < t1`` (task ``t``: group ``t // per_group``, frequencies
    from ``(t % per_group) * TL`` on) of the products that ``dims`` asks for.

    Float views of the complex spectra, batch-major: ``x (N, C, 2F)``, ``dy (N,
    C_out, 2F)``, ``y (N, C_out, 2F)``, ``dx (N, C, 2F)``, ``dw (C_out, Cg, 2F)``
    and the copies ``x_keep``/``dy_keep``; ``kp``: the planar blocked ``K``,
    ``[g][task][o][c][W]``.  ``dims = (N, C, C_out, F, groups, do_y, do_dx,
    do_dw, keep_x, keep_dy)``.  ``Y = X K`` needs ``x``; ``DX = DY conj(K)``
    needs ``dy``; ``DW = conj(DY)^T X``, computed as ``conj(DY^T conj(X))``,
    needs both.
    """
    L = LANES
    TL = LANES * BLOCK_LANES
    W = 2 * TL
    n_rows, c_in, c_out, n_freq, groups = dims[0], dims[1], dims[2], dims[3], dims[4]
    do_y, do_dx, do_dw, keep_x, keep_dy = dims[5], dims[6], dims[7], dims[8], dims[9]
    cg = c_in // groups
    og = c_out // groups
    per_group = (n_freq + TL - 1) // TL
    need_x = do_y + do_dw > 0
    need_dy = do_dx + do_dw > 0
    # the task's X and DY, planar rows: [row][channel][W]
    xs = np.zeros(n_rows * cg * W if need_x else 0, kp.dtype)
    ds = np.zeros(n_rows * og * W if need_dy else 0, kp.dtype)
    # the micro-kernels' results, four planar rows per row of the batch (or of DW)
    res = np.empty(max(n_rows, og) * 4 * W, kp.dtype)
    cg4 = cg - cg % 4
    og4 = og - og % 4
    for t in range(t0, t1):
        g = t // per_group
        f0 = (t - g * per_group) * TL
        count = min(TL, n_freq - f0)
        subs = (count + L - 1) // L
        kb = t * og * cg * W            # K(o, c) at kb + (o cg + c) W
        if need_x:
            for n in range(n_rows):
                for c in range(cg):
                    ch = g * cg + c
                    _ahead(x[n, ch], 2 * (f0 + count), 2 * (f0 + count + TL))
                    _planar(x[n, ch, 2 * f0:2 * (f0 + count)], xs, (n * cg + c) * W, count,
                            x_keep[n, ch, 2 * f0:2 * (f0 + count)] if keep_x else x_keep[0, 0, 0:0],
                            keep_x, False)
        if need_dy:
            for n in range(n_rows):
                for o in range(og):
                    ch = g * og + o
                    _ahead(dy[n, ch], 2 * (f0 + count), 2 * (f0 + count + TL))
                    _planar(dy[n, ch, 2 * f0:2 * (f0 + count)], ds, (n * og + o) * W, count,
                            dy_keep[n, ch, 2 * f0:2 * (f0 + count)] if keep_dy else dy_keep[0, 0, 0:0],
                            keep_dy, False)
        fr = slice(2 * f0, 2 * (f0 + count))
        # each block of four output channels: sub-block by sub-block (its slice of K stays
        # in L1 over the rows), then the rows stored whole
        if do_y:          # Y[n, o] = sum_c X[n, c] K[o, c]
            for o in range(0, og4, 4):
                for j in range(subs):
                    for n in range(n_rows):
                        _mk4(xs, n * cg * W, W, kp, kb + o * cg * W, cg * W, W, cg, res, n * 4 * W,
                             j, False)
                for n in range(n_rows):
                    for q in range(4):
                        _store(res, 4 * n + q, y[n, g * og + o + q, fr], count, False)
            for o in range(og4, og):
                for j in range(subs):
                    for n in range(n_rows):
                        _mk1(xs, n * cg * W, W, kp, kb + o * cg * W, W, cg, res, n * 4 * W, j,
                             False)
                for n in range(n_rows):
                    _store(res, 4 * n, y[n, g * og + o, fr], count, False)
        if do_dx:         # DX[n, c] = sum_o DY[n, o] conj(K[o, c])
            for c in range(0, cg4, 4):
                for j in range(subs):
                    for n in range(n_rows):
                        _mk4(ds, n * og * W, W, kp, kb + c * W, W, cg * W, og, res, n * 4 * W, j,
                             True)
                for n in range(n_rows):
                    for q in range(4):
                        _store(res, 4 * n + q, dx[n, g * cg + c + q, fr], count, False)
            for c in range(cg4, cg):
                for j in range(subs):
                    for n in range(n_rows):
                        _mk1(ds, n * og * W, W, kp, kb + c * W, cg * W, og, res, n * 4 * W, j,
                             True)
                for n in range(n_rows):
                    _store(res, 4 * n, dx[n, g * cg + c, fr], count, False)
        if do_dw:         # conj(DW[o, c]) = sum_n DY[n, o] conj(X[n, c])
            for c in range(0, cg4, 4):
                for j in range(subs):
                    for o in range(og):
                        _mk4(ds, o * W, og * W, xs, c * W, W, cg * W, n_rows, res, o * 4 * W, j,
                             True)
                for o in range(og):
                    for q in range(4):
                        _store(res, 4 * o + q, dw[g * og + o, c + q, fr], count, True)
            for c in range(cg4, cg):
                for j in range(subs):
                    for o in range(og):
                        _mk1(ds, o * W, og * W, xs, c * W, cg * W, n_rows, res, o * 4 * W, j,
                             True)
                for o in range(og):
                    _store(res, 4 * o, dw[g * og + o, c, fr], count, True)


def _py_pack(conj_k, kp, groups, t0, t1):
    """Tasks ``t0 <= t < t1`` (group ``t // per_group``, frequencies from ``(t %
    per_group) * TL``) of ``K = conj(conj_k)`` planar, ``kp[((t * Og + o) * Cg +
    c) * W]``, from the float view ``conj_k (C_out, Cg, 2F)``."""
    TL = LANES * BLOCK_LANES
    c_out, cg, f2 = conj_k.shape
    n_freq = f2 // 2
    og = c_out // groups
    per_group = (n_freq + TL - 1) // TL
    for t in range(t0, t1):
        g = t // per_group
        f0 = (t - g * per_group) * TL
        count = min(TL, n_freq - f0)
        for o in range(og):
            for c in range(cg):
                _planar(conj_k[g * og + o, c, 2 * f0:2 * (f0 + count)], kp,
                        ((t * og + o) * cg + c) * 2 * TL, count, conj_k[0, 0, 0:0], False, True)


def _compile(real: np.dtype):
    """The numba kernels for float ``real`` (float32 or float64): compiled, or loaded
    from numba's cache; a :class:`CompileNotice` first when they must be compiled."""
    global _noticed, _stack_floats, _at, _prefetch, _ahead, _mk4, _mk1, _planar, _store
    import numba
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    options: Dict[str, Any] = dict(nogil=True, cache=True, fastmath={"contract"},
                                   error_model="numpy", boundscheck=False)
    if not _jit:
        @intrinsic
        def stack_floats(typingctx, like):
            """``8 * LANES`` floats of ``like``'s dtype on the stack: the accumulators of
            one micro-kernel call."""
            size = 8 * LANES

            def codegen(context, builder, signature, args):
                ty = context.get_value_type(like.dtype)
                item = context.get_constant(types.intp, context.get_abi_sizeof(ty))
                out = context.make_array(signature.return_type)(context, builder)
                context.populate_array(
                    out, data=cgutils.alloca_once(builder, ty, size=size),
                    shape=cgutils.pack_array(builder, [context.get_constant(types.intp, size)]),
                    strides=cgutils.pack_array(builder, [item]), itemsize=item, meminfo=None)
                return out._getvalue()
            return types.Array(like.dtype, 1, "C")(like), codegen

        @intrinsic
        def at(typingctx, arr, offset):
            """The 1-D C-contiguous ``arr`` from ``offset`` on, as a view made without
            bounds arithmetic (the callers keep their indices in bounds)."""
            def codegen(context, builder, signature, args):
                src = context.make_array(arr)(context, builder, args[0])
                item = context.get_constant(types.intp, context.get_abi_sizeof(
                    context.get_value_type(arr.dtype)))
                length = builder.sub(cgutils.unpack_tuple(builder, src.shape, 1)[0], args[1])
                out = context.make_array(signature.return_type)(context, builder)
                context.populate_array(
                    out, data=builder.gep(src.data, [args[1]], inbounds=True),
                    shape=cgutils.pack_array(builder, [length]),
                    strides=cgutils.pack_array(builder, [item]), itemsize=item, meminfo=None)
                return out._getvalue()
            return types.Array(arr.dtype, 1, "C")(arr, types.intp), codegen

        @intrinsic
        def prefetch(typingctx, arr, offset):
            """A hint to fetch the cache line of ``arr[offset]`` for reading; never
            faults, whatever the address."""
            def codegen(context, builder, signature, args):
                import llvmlite.ir as ir
                src = context.make_array(arr)(context, builder, args[0])
                ptr = builder.bitcast(builder.gep(src.data, [args[1]]), ir.IntType(8).as_pointer())
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [
                        ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(32), ir.IntType(32)]),
                    "llvm.prefetch.p0i8")
                builder.call(fn, [ptr, ir.Constant(ir.IntType(32), 0),
                                  ir.Constant(ir.IntType(32), 3), ir.Constant(ir.IntType(32), 1)])
                return context.get_dummy_value()
            return types.void(arr, types.intp), codegen

        _stack_floats, _at, _prefetch = stack_floats, at, prefetch
        inline = dict(options, inline="always")
        _mk4 = _jit["mk4"] = numba.njit(**inline)(_py_mk4)
        _mk1 = _jit["mk1"] = numba.njit(**inline)(_py_mk1)
        _planar = _jit["planar"] = numba.njit(**inline)(_py_planar)
        _store = _jit["store"] = numba.njit(**inline)(_py_store)
        _ahead = _jit["ahead"] = numba.njit(**inline)(_py_ahead)

    f = numba.from_dtype(real)
    a3, a1 = types.Array(f, 3, "C"), types.Array(f, 1, "C")
    dims = types.UniTuple(types.int64, 10)
    products_sig = types.void(a3, a3, a1, a3, a3, a3, a3, a3, dims, types.int64, types.int64)
    pack_sig = types.void(a3, a1, types.int64, types.int64, types.int64)
    products = numba.njit(**options)(_py_products)
    pack = numba.njit(**options)(_py_pack)
    cached = _in_cache(products, products_sig) and _in_cache(pack, pack_sig)
    if not cached and not _noticed:
        _noticed = True
        warnings.warn(f"fftconv: numba is compiling the channel-product kernels for {real.name} "
                      f"on this first use (about 10 s, once per machine: numba caches them). "
                      f"To do it ahead of time run fftconv.compiled.warm_up() (e.g. python -c "
                      f"\"import fftconv.compiled as c; c.warm_up()\").  (Shown once per "
                      f"process.)", CompileNotice, stacklevel=_stacklevel())
    products.compile(products_sig)
    pack.compile(pack_sig)
    products.disable_compile()
    pack.disable_compile()
    return products, pack


def _in_cache(dispatcher, signature) -> bool:
    """Whether numba's cache holds ``dispatcher`` for ``signature`` (numba's
    internals; ``False`` when they cannot tell, which only costs a notice)."""
    try:
        cache = dispatcher._cache
        return cache.load_overload(signature, dispatcher.targetctx) is not None
    except Exception:  # noqa: BLE001 - internals of numba; assume a compile
        return False


def _stacklevel() -> int:
    """The first frame outside fftconv, so the notice points at the user's call."""
    import os
    import sys
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def kernels(real) -> Tuple[Any, Any]:
    """``(products, pack)``: the compiled kernels for float dtype ``real``, compiled
    or loaded from the cache on first use (thread-safe)."""
    real = np.dtype(real)
    if real not in _kernels:
        if not AVAILABLE:
            raise ImportError("fftconv.compiled needs numba >= 0.60: pip install "
                              "'fftconv[compiled]'")
        with _lock:
            if real not in _kernels:
                _kernels[real] = _compile(real)
    return _kernels[real]


def warm_up(dtypes=(np.float32, np.float64)) -> float:
    """Compile (or load from numba's cache) the kernels for ``dtypes`` now, so no
    later call waits for them; returns the seconds it took.  It gives no
    :class:`CompileNotice`: whoever calls it asked for the compile."""
    global _noticed
    start = time.perf_counter()
    _noticed = True
    for d in dtypes:
        kernels(d)
    return time.perf_counter() - start


# -- the products ---------------------------------------------------------------------------
def _ceil(a: int, b: int) -> int:
    return -(-a // b)


_REAL: Dict[np.dtype, np.dtype] = {np.dtype(np.complex64): np.dtype(np.float32),
                                   np.dtype(np.complex128): np.dtype(np.float64)}


def _floats(a: np.ndarray) -> np.ndarray:
    """The float view ``(rows, cols, 2F)`` of a C-contiguous complex ``(rows, cols, F)``."""
    return a.view(_REAL[a.dtype])


def _contiguous(a, dtype) -> np.ndarray:
    """``a`` as a C-contiguous array of complex ``dtype`` (itself when it is one)."""
    return np.ascontiguousarray(a, dtype=dtype)


class _Out:
    """A destination the kernels write: ``out`` itself when it is C-contiguous of
    the compute dtype, else a scratch copied into ``out`` by :meth:`finish`."""

    def __init__(self, out, dtype):
        self.out = out
        ok = (out is not None and isinstance(out, np.ndarray) and out.dtype == dtype
              and out.flags.c_contiguous)
        self.buffer = out if ok or out is None else np.empty(out.shape, dtype)

    def floats(self, dummy):
        return dummy if self.buffer is None else _floats(self.buffer)

    def finish(self):
        if self.out is not None and self.buffer is not self.out:
            np.copyto(self.out, self.buffer)


class CompiledProducts:
    """The products as compiled tuple GEMMs on batch-major spectra (any grouping).

    ``K`` (from :meth:`kernel`) is a flat float array: planar runs
    ``[g][task][o][c][re|im][TASK_LANES]``, the last task of each group padded
    with zeros.  ``Y`` and ``DX`` are written batch-major
    ``(rows, cols, F)``, ``DW`` ``(C_out, Cg, F)``; a kept ``X`` or ``DY`` is a
    batch-major copy ``(rows, cols, F)``.  numpy arrays only (the numpy backend).
    """

    #: ``Y`` and ``DX`` are batch-major: the inverse transforms read them as they are.
    frequency_major = False

    def __init__(self, groups: int, arrays: Any = None):
        self.groups, self.arrays = groups, arrays

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _dtype(*arrays) -> np.dtype:
        """The complex compute dtype of numpy ``arrays`` (``None`` skipped)."""
        given = [a for a in arrays if a is not None]
        for a in given:
            if not isinstance(a, np.ndarray):
                raise TypeError(f"CompiledProducts: runs on numpy arrays only (the numpy "
                                f"backend), got {type(a).__module__}.{type(a).__name__}")
        dtype = np.result_type(*[a.dtype for a in given])
        return np.dtype(np.complex128 if dtype == np.complex128 or dtype == np.float64
                        else np.complex64)

    def _run(self, dtype, dims: tuple, arrays: tuple, threads: int) -> None:
        products, _ = kernels(_REAL[dtype])
        n_rows, c_in, c_out, n_freq, groups = dims[:5]
        tasks = groups * _ceil(n_freq, TASK_LANES)
        macs = n_rows * n_freq * c_out * (c_in // groups) * sum(dims[5:8])
        shares = 1 if macs < PARALLEL_MIN_MACS else max(1, min(int(threads), tasks))
        pieces = [(tasks * i // shares, tasks * (i + 1) // shares) for i in range(shares)]
        runtime.run_shares(lambda piece: products(*arrays, dims, piece[0], piece[1]), pieces,
                           shares)

    def _check_k(self, k, n_freq: int, og: int, cg: int, real: np.dtype):
        size = self.groups * _ceil(n_freq, TASK_LANES) * og * cg * 2 * TASK_LANES
        if not (isinstance(k, np.ndarray) and k.ndim == 1 and k.size == size):
            raise ValueError(f"CompiledProducts: K must come from CompiledProducts.kernel for "
                             f"{self.groups} groups, {og}x{cg} channels per group and "
                             f"{n_freq} frequencies ({size} floats), got "
                             f"{getattr(k, 'shape', type(k))}")
        return k if k.dtype == real and k.flags.c_contiguous else np.ascontiguousarray(k, real)

    # -- the interface of contraction.GemmProducts ------------------------------------------
    def kernel(self, conj_k_spec, threads: int = 1):
        """``K = conj(FFT(conj w))``, planar and blocked, from the batch-major spectrum
        of ``conj w`` ``(C_out, Cg, F)``."""
        dtype = self._dtype(conj_k_spec)
        conj_k = _contiguous(conj_k_spec, dtype)
        c_out, cg, n_freq = conj_k.shape
        real = _REAL[dtype]
        _, pack = kernels(real)
        tasks = self.groups * _ceil(n_freq, TASK_LANES)
        kp = np.empty(tasks * (c_out // self.groups) * cg * 2 * TASK_LANES, real)
        shares = 1 if conj_k.size < PARALLEL_MIN_MACS else max(1, min(int(threads), tasks))
        pieces = [(tasks * i // shares, tasks * (i + 1) // shares) for i in range(shares)]
        runtime.run_shares(lambda p: pack(_floats(conj_k), kp, self.groups, p[0], p[1]), pieces,
                           shares)
        return kp

    def kept_shape(self, n_freq: int, rows: int, channels: int) -> tuple:
        """Shape of the ``X`` (or ``DY``) a pass keeps: batch-major ``(rows, channels, F)``."""
        return (rows, channels, n_freq)

    def forward(self, x_spec, k, out, x_keep=None, threads=1):
        """``out (N, C_out, F)``: ``Y = X K^T`` per frequency and group; ``x_keep``
        ``(N, C_in, F)``, if given, receives a copy of ``X``."""
        dtype = self._dtype(x_spec)
        x = _contiguous(x_spec, dtype)
        n_rows, c_in, n_freq = x.shape
        return self._products(dtype, x, None, k, (n_rows, c_in, out.shape[1], n_freq), out, None,
                              None, x_keep, None, threads)[0]

    def backward(self, x_spec, dy_spec, k, dx_out=None, dw_out=None, dy_keep=None, threads=1):
        """Both gradient products in one walk over the frequencies; either may be skipped.

        ``x_spec`` ``(N, C_in, F)`` (transformed or kept; ``None`` skips ``DW``),
        ``dy_spec`` ``(N, C_out, F)``; ``dx_out (N, C_in, F)`` gets ``DX``,
        ``dw_out (C_out, Cg, F)`` ``DW`` summed over the batch; ``dy_keep``
        ``(N, C_out, F)``, if given, a copy of ``DY`` for :meth:`transposed`.
        """
        dtype = self._dtype(x_spec, dy_spec)
        dy = _contiguous(dy_spec, dtype)
        n_rows, c_out, n_freq = dy.shape
        do_dw = dw_out is not None and x_spec is not None
        x = _contiguous(x_spec, dtype) if do_dw else None
        c_in = (x.shape[1] if x is not None else dx_out.shape[1] if dx_out is not None
                else c_out)
        return self._products(dtype, x, dy, k, (n_rows, c_in, c_out, n_freq), None,
                              dx_out, dw_out if do_dw else None, None, dy_keep, threads)[1:]

    def transposed(self, x_spec, dy_spec, k, y_out=None, dw_out=None, threads=1):
        """The forward product and the weight-gradient product from one ``X``: ``y_out
        (N, C_out, F)`` gets ``Y = X K^T``, ``dw_out (C_out, Cg, F)`` gets ``DW =
        conj(DY)^T X`` with ``dy_spec`` ``(N, C_out, F)`` (kept or transformed);
        either may be ``None``.  Returns ``(y_out, dw_out)``."""
        dtype = self._dtype(x_spec, dy_spec)
        x = _contiguous(x_spec, dtype)
        n_rows, c_in, n_freq = x.shape
        do_dw = dw_out is not None and dy_spec is not None
        dy = _contiguous(dy_spec, dtype) if do_dw else None
        c_out = (y_out.shape[1] if y_out is not None else dw_out.shape[0] if dw_out is not None
                 else c_in)
        y, _, dw = self._products(dtype, x, dy, k, (n_rows, c_in, c_out, n_freq), y_out, None,
                                  dw_out if do_dw else None, None, None, threads)
        return y, dw

    def _products(self, dtype, x, dy, k, shape, y_out, dx_out, dw_out, x_keep, dy_keep,
                  threads):
        n_rows, c_in, c_out, n_freq = shape
        groups = self.groups
        real = _REAL[dtype]
        if y_out is None and dx_out is None and dw_out is None:   # copies only
            for keep, spec in ((x_keep, x), (dy_keep, dy)):
                if keep is not None:
                    np.copyto(keep, spec)
            return y_out, dx_out, dw_out
        kp = self._check_k(k, n_freq, c_out // groups, c_in // groups, real)
        dummy3 = np.empty((1, 1, 0), real)
        outs = [_Out(o, dtype) for o in (y_out, dx_out, dw_out, x_keep, dy_keep)]
        arrays = (dummy3 if x is None else _floats(x), dummy3 if dy is None else _floats(dy),
                  kp) + tuple(o.floats(dummy3) for o in outs)
        flags = tuple(int(o.out is not None) for o in outs)
        self._run(dtype, (n_rows, c_in, c_out, n_freq, groups) + flags, arrays, threads)
        for o in outs:
            o.finish()
        return y_out, dx_out, dw_out
