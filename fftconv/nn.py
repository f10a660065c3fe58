"""``fftconv.Conv``: a convolution layer with weights, gradients and a tape.

For research code that writes its own numpy networks (or CuPy, or plain torch
tensors: ``like=``): the layer owns ``w``
and ``b``, accumulates ``dw`` and ``db`` as PyTorch does, and differentiates
every call, however many are outstanding, through the pullbacks of
:func:`fftconv.vjp` (last in, first out, as a tape).  It keeps one plan per
input shape, so the short last batch of an epoch does not re-plan the full
one, and each plan keeps its weight spectrum while the weights do not change.
Its arrays (parameters, gradients, inputs and results) are of one library on
one device, ``like=``'s (``fftconv.backends``); the initial values are drawn on
the host and moved there once.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from math import prod, sqrt
from typing import Any, ClassVar, List, Optional, Union, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .api import plan as make_plan
from .backends import Arrays, host
from .checks import (ALGORITHM, DEFAULTS, LAYER_DEFAULTS, Ints, Layout, Padding, PaddingMode,
                     check_algorithm, check_bool, check_count, check_dtype, check_ints,
                     check_layer, check_layer_input, check_like, check_like_argument,
                     check_operand, check_parameter, fail, is_int, layer_keywords)
from .config import get_settings
from .docstrings import PARAMETERS
from .planner import Plan, Pullback, check_runs_on
from .registry import NAMES
from .runner import weights_last

#: Plans kept per layer (one per input shape, least recently used dropped).
MAX_PLANS = 8
#: Calls waiting for their backward pass at which a layer warns, once, that its tape
#: grows (evaluation without ``grad=False``); :attr:`Conv.tape_warning` per layer.
TAPE_WARNING = 64


class TapeWarning(UserWarning):
    """A layer's tape holds many calls that wait for their backward pass."""


class Conv:
    """An N-d convolution layer (``nn.Conv*d`` / ``nn.ConvTranspose*d`` in numpy, CuPy or
    torch tensors).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or sequence of int
        One entry per spatial axis: its length fixes the number of axes.  One int
        is taken for every axis where the number of axes is known: in
        :class:`Conv1d`, :class:`Conv2d` and :class:`Conv3d` (in ``Conv`` it is a
        ``TypeError`` that says so).{params}
    bias : bool, optional
        Whether the layer has a bias (default True).
    dtype : dtype, optional
        A float or complex dtype (float16/32/64, complex64/128) of the weights
        and of the inputs the layer takes (default float32), a numpy dtype or
        one of ``like``'s library (``torch.float64``); any other is a ``TypeError``.
    rng : numpy Generator or int, optional
        Seeds the initialisation (numpy's generator, whatever ``like`` is: a
        seed gives the same initial values on every library and device).
    like : array, optional
        An array (numpy, CuPy, a torch tensor, any array API array) whose
        library and device the layer lives on (default
        numpy): ``w``, ``b``, ``dw`` and ``db`` are arrays of that kind, its plans
        are built ``like=`` it, and it takes inputs and ``dy`` of that kind only
        (another kind is a ``TypeError``; a list is converted) and returns
        results of it.  Only its library and device are used, not its values.

    Attributes
    ----------
    w, b : array
        Weights ``(C_out, C_in // groups, *kernel)`` (transposed: ``(C_in,
        C_out // groups, *kernel)``; ``layout="channels_last"``: the kernel axes
        first, as :func:`fftconv.forward` takes them) and bias ``(C_out,)`` or
        ``None``, initialised as PyTorch does: kaiming-uniform with ``a = sqrt(5)``,
        i.e. uniform in ``±1/sqrt(fan_in)``, and the bias uniform in
        ``±1/sqrt(fan_in)`` (``fan_in = C_in // groups * prod(kernel)``, transposed
        ``C_out // groups * prod(kernel)``).  Complex dtypes draw the real and
        imaginary parts so.
    dw, db : array
        Gradients, accumulated by :meth:`backward` until :meth:`zero_grad`.
    arrays : fftconv.backends.Arrays
        The library and device of the layer's arrays (``like``'s).

    Examples
    --------
    >>> import numpy as np, fftconv
    >>> conv = fftconv.Conv(3, 8, (3, 3), padding=1, rng=0)
    >>> x = np.ones((2, 3, 16, 16), np.float32)
    >>> y = conv(x)
    >>> dx = conv.backward(np.ones_like(y))
    >>> y.shape, dx.shape, conv.dw.shape, float(conv.db[0])
    ((2, 8, 16, 16), (2, 3, 16, 16), (8, 3, 3, 3), 512.0)
    >>> fftconv.Conv2d(3, 8, 3, padding="same").w.shape      # an int kernel_size
    (8, 3, 3, 3)
    >>> import torch                                              # doctest: +SKIP
    >>> conv = fftconv.Conv2d(3, 8, 3, rng=0, like=torch.empty(0))  # doctest: +SKIP
    >>> type(conv(torch.ones(2, 3, 16, 16)))                        # doctest: +SKIP
    <class 'torch.Tensor'>
    """

    #: The number of spatial axes, fixed by :class:`Conv1d`, :class:`Conv2d` and
    #: :class:`Conv3d` (``None``: ``kernel_size`` gives it).
    spatial_dims: ClassVar[Optional[int]] = None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Ints, *,
                 padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
                 dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
                 flip_kernel: bool = DEFAULTS.flip_kernel,
                 transposed: bool = DEFAULTS.transposed,
                 output_padding: Ints = DEFAULTS.output_padding,
                 padding_mode: PaddingMode = DEFAULTS.padding_mode,
                 layout: Layout = DEFAULTS.layout, algorithm: str = ALGORITHM,
                 bias: bool = True, dtype: DTypeLike = np.float32,
                 rng: Union[None, int, np.random.Generator] = None, like: Any = None) -> None:
        func = self._func = f"fftconv.{type(self).__name__}"
        self.kernel_size = self._kernel(func, kernel_size)
        nd = len(self.kernel_size)
        self.in_channels = check_count(func, "in_channels", in_channels)
        self.out_channels = check_count(func, "out_channels", out_channels)
        self.transposed = check_bool(func, "transposed", transposed)
        self.arrays: Arrays = check_like_argument(func, like)
        self.dtype = self._dtype(func, dtype, self.arrays)
        self.algorithm = check_algorithm(func, algorithm, NAMES)
        check_runs_on(func, self.algorithm, self.arrays)
        self.layer = dict(layer_keywords(locals()), transposed=self.transposed)
        rows, cols = ((self.in_channels, self.out_channels) if self.transposed
                      else (self.out_channels, self.in_channels))
        if not is_int(groups) or groups < 1 or cols % groups:
            fail(func, f"groups must be an int >= 1 that divides "
                       f"{'C_out' if self.transposed else 'C_in'}={cols}, got groups={groups!r}")
        w_first = (rows, cols // groups) + self.kernel_size
        last = layout == "channels_last"
        # every option is checked now, on a one-sample input as large as the kernel reaches
        probe = tuple(d * (k - 1) + 1 for k, d in
                      zip(self.kernel_size, check_ints(func, "dilation", dilation, nd, 1)))
        x_probe = (1,) + probe + (self.in_channels,) if last else (1, self.in_channels) + probe
        w_probe = self.kernel_size + (cols // groups, rows) if last else w_first
        check_layer(func, x_probe, w_probe, real=self.dtype.kind != "c", **self.layer)
        # drawn on the host with numpy's generator, as for any ``like``, then moved once
        w, b = self._initial(w_first, bool(bias), np.random.default_rng(rng))
        arrays = self.arrays
        self._w = arrays.asarray(weights_last(host(), w, self.layer["layout"]), self.dtype)
        self._b = None if b is None else arrays.asarray(b, self.dtype)
        self.dw = arrays.zeros(self._w.shape, self.dtype)
        self.db = None if b is None else arrays.zeros(b.shape, self.dtype)
        self._plans: "OrderedDict[tuple, Plan]" = OrderedDict()
        self._tape: List[Pullback] = []
        #: Pending calls at which the layer warns once (``None``: never).
        self.tape_warning: Optional[int] = TAPE_WARNING
        self._warned = False

    # -- the parameters: rebinding keeps their shape and dtype ---------------------------
    @property
    def w(self) -> np.ndarray:
        """The weights; another array may be assigned, of the same shape (the layer's
        channels and ``kernel_size``: build a new layer for others) and a dtype that
        promotes to the layer's."""
        return self._w

    @w.setter
    def w(self, value: ArrayLike) -> None:
        self._w = cast(np.ndarray, self._parameter(   # a shape given: never None
            "w", value, self._w.shape,
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}: build a new layer for another kernel size"))

    @property
    def b(self) -> Optional[np.ndarray]:
        """The bias ``(C_out,)``, or ``None`` (``bias=False``, which stays so)."""
        return self._b

    @b.setter
    def b(self, value: Optional[ArrayLike]) -> None:
        self._b = self._parameter("b", value, None if self._b is None else self._b.shape,
                                  f"out_channels={self.out_channels}")

    def _parameter(self, name: str, value, shape: Optional[tuple], why: str):
        """A new ``w`` or ``b``: checked (``check_parameter``), of the layer's kind (a
        list or another sequence is moved there; an array of another kind is a
        ``TypeError``)."""
        a = check_parameter(self._func, name, value, None if shape is None else tuple(shape),
                            self.dtype, why)
        if a is None:
            return None
        if hasattr(value, "shape"):
            check_like(self._func, self.arrays, **{name: a})
            return a
        return self.arrays.asarray(a, self.dtype)

    def _own(self, func: str, name: str, checked, given):
        """An operand checked by ``fftconv.checks`` (``checked``, from ``given``) as an
        array of the layer's kind: an array must already be one (else a ``TypeError``),
        a sequence is moved there."""
        if hasattr(given, "shape"):
            check_like(func, self.arrays, **{name: checked})
            return checked
        return self.arrays.asarray(checked, checked.dtype)   # numpy's, from the sequence

    @staticmethod
    def _dtype(func: str, dtype, arrays: Arrays) -> np.dtype:
        """A float or complex dtype that fftconv computes (else a ``TypeError``): a numpy
        dtype or one of ``arrays``' library."""
        native = False   # a dtype of like's library (torch.float64), not numpy's
        try:
            given = None if dtype is None else np.dtype(dtype)
        except TypeError:
            try:
                given, native = arrays.numpy_dtype(dtype), True
            except (TypeError, KeyError):
                given = None    # check_dtype says what is wrong
        if given is not None and given.kind not in "fc":
            fail(func, f"dtype must be a float or complex dtype (float16, float32, float64, "
                       f"complex64, complex128): the layer's weights are trained by gradients, "
                       f"got dtype={given}", TypeError)
        # a numpy dtype is read by numpy, a library's own by the library (check_dtype)
        checked = check_dtype(func, dtype, arrays if native or given is None else None)
        try:
            arrays.dtype(checked)
        except KeyError:
            fail(func, f"dtype={checked} has no equal in the layer's array library "
                       f"({arrays.describe()}, like=); use float32 or float64", TypeError)
        return checked

    def _kernel(self, func: str, kernel_size) -> tuple:
        """``kernel_size`` as a tuple of ints, one per spatial axis."""
        nd = self.spatial_dims
        if is_int(kernel_size) and nd is None:
            fail(func, f"kernel_size={kernel_size!r} is one int, which does not say how many "
                       f"spatial axes the layer has; give one entry per axis (e.g. (3, 3) for "
                       f"2-D) or use fftconv.Conv1d, Conv2d or Conv3d", TypeError)
        if not is_int(kernel_size) and not hasattr(kernel_size, "__len__"):
            fail(func, f"kernel_size must be an int or a sequence of ints, one per spatial "
                       f"axis, got kernel_size={kernel_size!r}", TypeError)
        return check_ints(func, "kernel_size", kernel_size,
                          len(kernel_size) if nd is None else nd, 1)

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
    def plan_for(self, x_shape: tuple) -> Plan:
        """The plan for inputs of ``x_shape`` under the current settings (built once,
        kept per shape and settings: ``fftconv.using(threads=1)`` gets its own)."""
        key = (tuple(x_shape), get_settings())
        if key not in self._plans:
            self._plans[key] = make_plan(tuple(x_shape), tuple(self.w.shape),
                                         dtype=self.arrays.dtype(self.dtype),  # the library's
                                         algorithm=self.algorithm, like=self.w, **self.layer)
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        return self._plans[key]

    def __call__(self, x: ArrayLike, *, grad: bool = True) -> np.ndarray:
        """``y = conv(x, w) + b``; pushes this call's pullback on the tape, unless
        ``grad=False`` (evaluation: nothing is kept, nothing waits for backward).

        Each pullback holds its call's input spectrum until :meth:`backward` pops
        it or :meth:`clear_tape` drops it: a layer that is only evaluated must be
        called with ``grad=False``.  When :attr:`pending` reaches
        :attr:`tape_warning` (64 by default) the layer warns once
        (:class:`TapeWarning`); the tape itself is never cut, since the calls
        on it may still be differentiated (an unrolled RNN keeps hundreds).

        A list or another sequence is converted to the layer's dtype (and kind); an
        array must be of the layer's kind (``like``) and have a dtype that promotes
        to the layer's.
        """
        func = self._func
        checked = check_layer_input(func, x, self.dtype, self.in_channels, len(self.kernel_size),
                                    self.layer["layout"] == "channels_last")
        a = self._own(func, "x", checked, x)
        plan = self.plan_for(a.shape)
        if not check_bool(func, "grad", grad):
            return plan.apply(a, self.w, self.b)
        y, pullback = plan.vjp(a, self.w, self.b)
        self._tape.append(pullback)
        if (self.tape_warning is not None and not self._warned
                and len(self._tape) >= self.tape_warning):
            self._warned = True
            warnings.warn(
                f"{self._repr_name()} holds {len(self._tape)} calls waiting for their backward "
                f"pass, each keeping its input's spectrum; call the layer with grad=False when "
                f"only evaluating, and conv.clear_tape() to drop the calls that will not be "
                f"differentiated (or set conv.tape_warning = None if they all will be)",
                TapeWarning, stacklevel=2)
        return y

    forward = __call__

    def backward(self, dy: ArrayLike, *, need_dx: bool = True) -> Optional[np.ndarray]:
        """``dx`` of the most recent outstanding call (last in, first out); adds that
        call's weight and bias gradients into :attr:`dw` and :attr:`db`.
        ``need_dx=False`` (a first layer) skips ``dx`` and returns ``None``."""
        func = f"{self._func}.backward"
        need_dx = check_bool(func, "need_dx", need_dx)
        if not self._tape:
            fail(func, "no call of the layer is waiting for its backward pass; call the layer "
                       "on x first", RuntimeError)
        pullback = self._tape[-1]
        dy = self._own(func, "dy", check_operand(func, "dy", dy, pullback.y_shape, self.dtype,
                                                 self.dtype, origin="forward"), dy)
        grads = pullback(dy, need_dx=need_dx)
        self._tape.pop()
        if grads.dw is not None:
            self.dw += grads.dw
        if self.db is not None and grads.db is not None:
            self.db += grads.db
        return grads.dx

    def zero_grad(self) -> None:
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

    def clear_tape(self) -> int:
        """Drop every call waiting for its backward pass (and the spectra they keep),
        e.g. after evaluating without ``grad=False``; returns how many were dropped.
        :attr:`dw` and :attr:`db` are unchanged."""
        dropped = len(self._tape)
        self._tape.clear()
        self._warned = False
        return dropped

    def _repr_name(self) -> str:
        nd = len(self.kernel_size)
        kind = f"ConvTranspose{nd}d" if self.transposed else f"Conv{nd}d"
        return f"{self._func} ({kind}({self.in_channels}, {self.out_channels}, " \
               f"kernel_size={self.kernel_size}))"

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
        optional = ("padding", "output_padding", "dilation", "groups")
        parts += [f"{key}={lay[key] if key == 'groups' else shown(lay[key])}"
                  for key in optional
                  if shown(lay[key]) not in (shown(LAYER_DEFAULTS[key]), (0,) * nd, "valid")]
        if self.b is None:
            parts.append("bias=False")
        parts += [f"{key}={lay[key]!r}" for key in ("flip_kernel", "padding_mode", "layout")
                  if lay[key] != LAYER_DEFAULTS[key]]
        chosen = sorted({p.algorithm for p in self._plans.values()})
        algorithm = (self.algorithm if self.algorithm != "auto" or not chosen
                     else "auto: " + ", ".join(chosen))
        parts.append(f"dtype={self.dtype}, algorithm={algorithm!r}")
        return f"{name}({', '.join(parts)})"


class Conv1d(Conv):
    """:class:`Conv` with one spatial axis; ``kernel_size`` may be one int, as for
    ``torch.nn.Conv1d``.  Every keyword is :class:`Conv`'s (``transposed=True``
    makes a ``ConvTranspose1d``)."""

    spatial_dims = 1


class Conv2d(Conv):
    """:class:`Conv` with two spatial axes; ``kernel_size`` may be one int, as for
    ``torch.nn.Conv2d``.  Every keyword is :class:`Conv`'s (``transposed=True``
    makes a ``ConvTranspose2d``).

    Examples
    --------
    >>> import numpy as np, fftconv
    >>> conv = fftconv.Conv2d(3, 8, 5, padding="same", rng=0)
    >>> conv(np.ones((2, 3, 16, 16), np.float32)).shape
    (2, 8, 16, 16)
    """

    spatial_dims = 2


class Conv3d(Conv):
    """:class:`Conv` with three spatial axes; ``kernel_size`` may be one int, as for
    ``torch.nn.Conv3d``.  Every keyword is :class:`Conv`'s (``transposed=True``
    makes a ``ConvTranspose3d``)."""

    spatial_dims = 3


if Conv.__doc__:  # None under python -OO
    Conv.__doc__ = Conv.__doc__.format(params=PARAMETERS)
