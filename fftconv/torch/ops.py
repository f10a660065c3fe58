"""fftconv's convolution as PyTorch custom operators: what ``torch.compile``,
``torch.export`` and ``torch.jit.trace`` see; and how tensors reach the engine.

* ``fftconv::conv(Tensor x, Tensor w, Tensor? b, str layer, str algorithm) -> Tensor``
  runs :func:`fftconv.forward`;
* ``fftconv::conv_backward(Tensor dy, Tensor x, Tensor w, str layer, str algorithm,
  bool need_dx, bool need_dw, bool need_db) -> (Tensor, Tensor, Tensor)`` runs the
  stateless :func:`fftconv.backward` (a gradient not asked for comes back as an
  empty tensor, and the autograd formula returns ``None`` for it).

``layer`` is the layer keywords as canonical JSON (:func:`layer_key`): the ops
carry no Python state across their boundary, so a compiled or exported graph
holds everything it needs.  Their fake (meta) implementations compute shapes and
dtypes with fftconv's integer geometry (``fftconv.checks.check_layer``), with
every check of the eager call, and allocate nothing.

The ops run on CPU and CUDA tensors alike (:func:`to_engine`): a CPU tensor
reaches the engine as a numpy array sharing its memory (pyFFTW is the faster
library there), a CUDA tensor as itself, detached, so the engine runs on its
device (``torch.fft``, ``torch.matmul``) and nothing crosses to the host.  Their
results are contiguous, as the fake implementations promise (Inductor checks
the strides of an operator's outputs).

Eager calls do not use these ops: :func:`fftconv.torch.conv` keeps its
``autograd.Function``, whose backward reuses the spectrum of ``x`` its forward
computed; the ops recompute it (the price of having no state in the graph).
"""
import json
from typing import Optional, Tuple

import numpy as np
import torch

from .. import api
from ..checks import check_layer, check_layer_keywords

OP_FUNC = "fftconv::conv"


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array sharing its memory (conjugate and negative
    views are resolved first, which copies)."""
    return t.detach().resolve_conj().resolve_neg().numpy()


def from_numpy(a: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` sharing memory where torch can (a result with negative
    strides, e.g. the flipped weight gradient of ``flip_kernel=True``, is copied)."""
    return torch.from_numpy(a if all(s >= 0 for s in a.strides) else a.copy())


#: Device types whose tensors reach the engine as numpy arrays sharing their memory.
HOST_DEVICES = ("cpu",)
#: Device types whose tensors reach the engine as tensors (it runs on their device).
TENSOR_DEVICES = ("cuda",)


def to_engine(t: Optional[torch.Tensor]):
    """What fftconv's engine gets for tensor ``t``: a numpy array sharing its memory
    on the CPU (:func:`to_numpy`), the tensor itself, detached (conjugate and
    negative views resolved), on a device of :data:`TENSOR_DEVICES`; ``None`` for
    ``None``."""
    if t is None:
        return None
    if t.device.type in HOST_DEVICES:
        return to_numpy(t)
    return t.detach().resolve_conj().resolve_neg()


def from_engine(a) -> torch.Tensor:
    """A result of the engine as a tensor: numpy arrays through :func:`from_numpy`,
    tensors (the engine ran on their device) as they are."""
    return from_numpy(a) if isinstance(a, np.ndarray) else a


def _plain(value):
    """A layer keyword's value in JSON's terms (tuples as lists, numpy ints as ints)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@torch.compiler.assume_constant_result
def layer_key(layer: dict) -> str:
    """The layer keywords as canonical JSON (sorted keys, no spaces): the ``layer``
    argument of the ops, equal for equal layers (a constant of a Dynamo trace:
    the layer keywords of a module are)."""
    return json.dumps({name: _plain(value) for name, value in layer.items()},
                      sort_keys=True, separators=(",", ":"))


def layer_of(key: str) -> dict:
    """The inverse of :func:`layer_key` (lists back to tuples)."""
    return {name: _tuples(value) for name, value in json.loads(key).items()}


def geometry(x_shape, w_shape, real: bool, layer: dict, func: str = OP_FUNC):
    """The checked ``LayerGeometry`` of a call from shapes alone (no arrays).  The
    batch size is left out (it changes nothing but the batch): under
    ``torch.export`` with a dynamic batch it may be symbolic; the other sizes are
    made concrete (a symbolic one is specialised)."""
    return check_layer(func, (1,) + tuple(int(n) for n in x_shape[1:]),
                       tuple(int(n) for n in w_shape), real=real,
                       **check_layer_keywords(func, layer))


def result_dtype(*tensors) -> torch.dtype:
    """The dtype fftconv returns for these operands (CONVENTIONS §4: promotion,
    float16 stays float16), from their dtypes alone."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _is_real(*tensors) -> bool:
    return not any(t is not None and t.is_complex() for t in tensors)


@torch.library.custom_op("fftconv::conv", mutates_args=())
def conv_op(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], layer: str,
            algorithm: str) -> torch.Tensor:
    """:func:`fftconv.forward` of CPU or CUDA tensors (:func:`to_engine`), ``layer`` as
    :func:`layer_key` wrote it; ``y`` contiguous, on ``x``'s device."""
    y = api.forward(to_engine(x), to_engine(w), to_engine(b), algorithm=algorithm,
                    **layer_of(layer))
    return from_engine(y).contiguous()


@conv_op.register_fake
def _conv_fake(x, w, b, layer, algorithm):
    g = geometry(x.shape, w.shape, _is_real(x, w), layer_of(layer))
    return x.new_empty((x.shape[0],) + g.y_shape[1:], dtype=result_dtype(x, w, b))


@torch.library.custom_op("fftconv::conv_backward", mutates_args=())
def conv_backward_op(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, layer: str,
                     algorithm: str, need_dx: bool, need_dw: bool,
                     need_db: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fftconv.backward` of CPU or CUDA tensors; a gradient not needed is an
    empty tensor; the others contiguous, on ``x``'s device."""
    dx, dw, db = api.backward(to_engine(dy), to_engine(x), to_engine(w), algorithm=algorithm,
                              **layer_of(layer))

    def kept(g, need: bool) -> torch.Tensor:
        return from_engine(g).contiguous() if need and g is not None else x.new_empty(0)
    return kept(dx, need_dx), kept(dw, need_dw), kept(db, need_db)


@conv_backward_op.register_fake
def _conv_backward_fake(dy, x, w, layer, algorithm, need_dx, need_dw, need_db):
    g = geometry(x.shape, w.shape, _is_real(x, w), layer_of(layer))
    dtype = result_dtype(dy, x, w)
    return (x.new_empty(tuple(x.shape) if need_dx else (0,), dtype=dtype),
            w.new_empty(tuple(w.shape) if need_dw else (0,), dtype=dtype),
            w.new_empty((g.out_channels,) if need_db else (0,), dtype=dtype))


def _setup_context(ctx, inputs, output):
    x, w, b, layer, algorithm = inputs
    ctx.save_for_backward(x, w)
    ctx.layer, ctx.algorithm, ctx.has_bias = layer, algorithm, b is not None
    ctx.bias_dtype = None if b is None else b.dtype


def _backward(ctx, dy):
    need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
    need_db = need_db and ctx.has_bias
    if not (need_dx or need_dw or need_db):
        return None, None, None, None, None
    x, w = ctx.saved_tensors
    dx, dw, db = conv_backward_op(dy, x, w, ctx.layer, ctx.algorithm, need_dx, need_dw, need_db)
    return (dx.to(x.dtype) if need_dx else None, dw.to(w.dtype) if need_dw else None,
            db.to(ctx.bias_dtype) if need_db else None, None, None)


conv_op.register_autograd(_backward, setup_context=_setup_context)


def traced_conv(x, w, b, layer: dict, algorithm: str) -> torch.Tensor:
    """The call as one ``fftconv::conv`` node (what a traced graph records)."""
    return conv_op(x, w, b, layer_key(layer), algorithm)
