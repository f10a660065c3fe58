"""``fftconv.Conv``: a numpy convolution layer with weights, gradients and a tape.

For research code that writes its own numpy networks: the layer owns ``w``
and ``b``, accumulates ``dw`` and ``db`` as PyTorch does, and differentiates
every call, however many are outstanding, through the pullbacks of
:func:`fftconv.vjp` (last in, first out, as a tape).  It keeps one plan per
input shape, so the short last batch of an epoch does not re-plan the full
one, and each plan keeps its weight spectrum while the weights do not change.
"""
from __future__ import annotations

from collections import OrderedDict
from math import prod, sqrt

import numpy as np

from .api import plan as make_plan
from .config import get_settings
from .registry import NAMES
from .checks import check_algorithm, check_bool, check_ints, check_layer, fail

#: Plans kept per layer (one per input shape, least recently used dropped).
MAX_PLANS = 8


class Conv:
    """An N-d convolution layer (``nn.Conv*d`` / ``nn.ConvTranspose*d`` in numpy).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : sequence of int
        One entry per spatial axis: its length fixes the number of axes.
    stride, padding, dilation, groups, padding_mode, transposed, output_padding
        The layer keywords of :func:`fftconv.forward`.
    bias : bool
    dtype : numpy dtype
        Of the weights and of the inputs the layer takes (default float32).
    rng : numpy Generator or int, optional
        Seeds the initialisation.
    algorithm : str
        As for :func:`fftconv.plan` (default ``"auto"``).

    Attributes
    ----------
    w, b : ndarray
        Weights ``(C_out, C_in // groups, *kernel)`` (transposed: ``(C_in,
        C_out // groups, *kernel)``) and bias ``(C_out,)`` or ``None``,
        initialised as PyTorch does: kaiming-uniform with ``a = sqrt(5)``,
        i.e. uniform in ``±1/sqrt(fan_in)``, and the bias uniform in
        ``±1/sqrt(fan_in)`` (``fan_in = w.shape[1] * prod(kernel)``).  Complex
        dtypes draw the real and imaginary parts so.
    dw, db : ndarray
        Gradients, accumulated by :meth:`backward` until :meth:`zero_grad`.

    Examples
    --------
    >>> import numpy as np, fftconv
    >>> conv = fftconv.Conv(3, 8, (3, 3), padding=1, rng=0)
    >>> x = np.ones((2, 3, 16, 16), np.float32)
    >>> y = conv(x)
    >>> dx = conv.backward(np.ones_like(y))
    >>> y.shape, dx.shape, conv.dw.shape, float(conv.db[0])
    ((2, 8, 16, 16), (2, 3, 16, 16), (8, 3, 3, 3), 512.0)
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", transposed=False,
                 output_padding=0, dtype=np.float32, rng=None, algorithm="auto"):
        func = "fftconv.Conv"
        if isinstance(kernel_size, (int, np.integer)) or not hasattr(kernel_size, "__len__"):
            fail(func, f"kernel_size must be a sequence of ints, one per spatial axis (e.g. "
                       f"(3, 3) for 2-D), got kernel_size={kernel_size!r}", TypeError)
        self.kernel_size = check_ints(func, "kernel_size", kernel_size, len(kernel_size), 1)
        nd = len(self.kernel_size)
        self.in_channels = check_ints(func, "in_channels", in_channels, 1, 1)[0]
        self.out_channels = check_ints(func, "out_channels", out_channels, 1, 1)[0]
        self.transposed = check_bool(func, "transposed", transposed)
        self.dtype = np.dtype(dtype)
        self.algorithm = algorithm
        self.layer = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                          padding_mode=padding_mode, transposed=self.transposed,
                          output_padding=output_padding)
        rows, cols = ((self.in_channels, self.out_channels) if self.transposed
                      else (self.out_channels, self.in_channels))
        if not isinstance(groups, (int, np.integer)) or groups < 1 or cols % groups:
            fail(func, f"groups must be an int >= 1 that divides "
                       f"{'C_out' if self.transposed else 'C_in'}={cols}, got groups={groups!r}")
        w_shape = (rows, cols // groups) + self.kernel_size
        # every option is checked now, on a one-sample input as large as the kernel reaches
        probe = tuple(d * (k - 1) + 1 for k, d in
                      zip(self.kernel_size, check_ints(func, "dilation", dilation, nd, 1)))
        check_algorithm(func, algorithm, NAMES)
        check_layer(func, (1, self.in_channels) + probe, w_shape, real=self.dtype.kind != "c",
                    flip_kernel=False, **self.layer)
        self.w, self.b = self._initial(w_shape, bool(bias), np.random.default_rng(rng))
        self.dw = np.zeros_like(self.w)
        self.db = None if self.b is None else np.zeros_like(self.b)
        self._plans: "OrderedDict[tuple, object]" = OrderedDict()
        self._tape = []

    def _initial(self, w_shape, bias: bool, rng) -> tuple:
        """PyTorch's ``reset_parameters``: uniform in ``±1/sqrt(fan_in)`` for both."""
        bound = 1.0 / sqrt(w_shape[1] * prod(w_shape[2:]))

        def uniform(shape):
            a = rng.uniform(-bound, bound, shape)
            if self.dtype.kind == "c":
                a = a + 1j * rng.uniform(-bound, bound, shape)
            return a.astype(self.dtype)
        return uniform(w_shape), uniform((self.out_channels,)) if bias else None

    # -- the layer ---------------------------------------------------------------------
    def plan_for(self, x_shape: tuple):
        """The plan for inputs of ``x_shape`` under the current settings (built once,
        kept per shape and settings: ``fftconv.using(threads=1)`` gets its own)."""
        key = (tuple(x_shape), get_settings())
        if key not in self._plans:
            self._plans[key] = make_plan(x_shape, self.w.shape, dtype=self.dtype,
                                         algorithm=self.algorithm, **self.layer)
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        return self._plans[key]

    def __call__(self, x, *, grad: bool = True) -> np.ndarray:
        """``y = conv(x, w) + b``; pushes this call's pullback on the tape, unless
        ``grad=False`` (evaluation: nothing is kept, nothing waits for backward)."""
        x = np.asarray(x)
        nd = len(self.kernel_size)
        if x.ndim != nd + 2 or x.shape[1] != self.in_channels:
            fail("fftconv.Conv", f"x must have shape (N, {self.in_channels}, *spatial) with "
                                 f"{nd} spatial axes, got x.shape={x.shape}")
        if np.result_type(x.dtype, self.dtype) != self.dtype:
            fail("fftconv.Conv", f"x has dtype={x.dtype} but the layer's dtype is {self.dtype}; "
                                 f"cast x, or build the layer with dtype="
                                 f"{np.result_type(x.dtype, self.dtype)}", TypeError)
        plan = self.plan_for(x.shape)
        if not check_bool("fftconv.Conv", "grad", grad):
            return plan.apply(x, self.w, self.b)
        y, pullback = plan.vjp(x, self.w, self.b)
        self._tape.append(pullback)
        return y

    forward = __call__

    def backward(self, dy, *, need_dx: bool = True) -> np.ndarray:
        """``dx`` of the most recent outstanding call (last in, first out); adds that
        call's weight and bias gradients into :attr:`dw` and :attr:`db`.
        ``need_dx=False`` (a first layer) skips ``dx`` and returns ``None``."""
        if not self._tape:
            fail("fftconv.Conv.backward", "no call of the layer is waiting for its backward "
                                          "pass; call the layer on x first", RuntimeError)
        dx, dw, db = self._tape[-1](dy, need_dx=need_dx)
        self._tape.pop()
        self.dw += dw
        if self.db is not None:
            self.db += db
        return dx

    def zero_grad(self):
        """Set :attr:`dw` and :attr:`db` to zero (in place)."""
        self.dw[...] = 0
        if self.db is not None:
            self.db[...] = 0

    def parameters(self) -> list:
        """``[w, b]`` (``[w]`` without bias), the arrays themselves."""
        return [self.w] if self.b is None else [self.w, self.b]

    def gradients(self) -> list:
        """``[dw, db]``, matching :meth:`parameters`."""
        return [self.dw] if self.b is None else [self.dw, self.db]

    @property
    def pending(self) -> int:
        """Calls waiting for their backward pass."""
        return len(self._tape)

    def __repr__(self) -> str:
        """As PyTorch shows ``nn.Conv*d``: the options that differ from the defaults,
        plus the dtype and the algorithm in use (auto's choices once planned)."""
        nd, lay = len(self.kernel_size), self.layer

        def shown(v):   # an int per axis, a mode string, or a sequence as a tuple
            if isinstance(v, str):
                return v
            if isinstance(v, (int, np.integer)):
                return (int(v),) * nd
            return tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in v)
        name = f"ConvTranspose{nd}d" if self.transposed else f"Conv{nd}d"
        parts = [f"{self.in_channels}, {self.out_channels}", f"kernel_size={self.kernel_size}",
                 f"stride={shown(lay['stride'])}"]
        optional = (("padding", 0), ("output_padding", 0), ("dilation", 1), ("groups", 1))
        parts += [f"{key}={lay[key] if key == 'groups' else shown(lay[key])}"
                  for key, default in optional if lay[key] != default]
        if self.b is None:
            parts.append("bias=False")
        if lay["padding_mode"] != "zeros":
            parts.append(f"padding_mode={lay['padding_mode']!r}")
        chosen = sorted({p.algorithm for p in self._plans.values()})
        algorithm = (self.algorithm if self.algorithm != "auto" or not chosen
                     else "auto: " + ", ".join(chosen))
        parts.append(f"dtype={self.dtype}, algorithm={algorithm!r}")
        return f"{name}({', '.join(parts)})"
