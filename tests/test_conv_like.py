"""``fftconv.Conv(..., like=)``: the layer on torch CPU tensors and on ``array_api_strict``
arrays (issue 19, "the array kind in is the array kind out").

The parameters are drawn on the host with numpy's generator and moved once, so a
seed gives the same ``w`` and ``b`` on every library; every call then equals the
numpy layer's (forward, backward, the accumulation of ``dw``/``db`` over a tape
of two calls, channels-last), to CONVENTIONS §4's bounds, and every array the
layer holds or returns is of ``like``'s kind, on its device.  An operand of
another kind is a ``TypeError`` that names both kinds; a list is converted.
"""
import numpy as np
import pytest

import fftconv
from conftest import TOL, rel_err
from kinds import KINDS, Kind, torch, xp



def _check(kind, got, want, dtype, what):
    assert kind.is_kind(got), f"{what}: {type(got)} on {getattr(got, 'device', None)}"
    assert got.dtype == kind.native(dtype), f"{what}: dtype {got.dtype}"
    err = rel_err(kind.to_numpy(got), want)
    assert err <= TOL[np.dtype(dtype)], f"{what}: relative error {err:.3g}"


LAYERS = {
    "same": dict(padding="same"),
    "strided-groups": dict(padding=1, stride=2, groups=2, dilation=(1, 2), padding_mode="reflect"),
    "channels-last": dict(padding="same", stride=(1, 2), layout="channels_last", flip_kernel=True),
    "transposed": dict(padding=1, stride=2, output_padding=1, transposed=True),
}


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", KINDS)
def test_a_layer_like_an_array_equals_the_numpy_layer(name, dtype, layer):
    kind = Kind(name)
    kw = LAYERS[layer]
    ref = fftconv.Conv2d(4, 6, 3, rng=0, dtype=dtype, **kw)
    conv = fftconv.Conv2d(4, 6, 3, rng=0, dtype=dtype, like=kind.like(), **kw)
    assert conv.arrays.key == fftconv.backends.arrays_of(kind.like()).key
    # the same initial values, moved once: w, b, dw, db are of like's kind
    for got, want, what in ((conv.w, ref.w, "w"), (conv.b, ref.b, "b")):
        assert kind.is_kind(got), what
        np.testing.assert_array_equal(kind.to_numpy(got), want)
    for got, what in ((conv.dw, "dw"), (conv.db, "db")):
        assert kind.is_kind(got) and not kind.to_numpy(got).any(), what
    rng = np.random.default_rng(3)
    last = kw.get("layout") == "channels_last"
    shapes = [(2, 11, 9, 4) if last else (2, 4, 11, 9), (1, 8, 10, 4) if last else (1, 4, 8, 10)]
    xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    # a tape of two calls, differentiated last in, first out
    ys_ref = [ref(x) for x in xs]
    ys = [conv(kind.asarray(x)) for x in xs]
    for k, (y, y_ref) in enumerate(zip(ys, ys_ref)):
        _check(kind, y, y_ref, dtype, f"y{k}")
    assert conv.pending == 2
    for k in (1, 0):
        dy = rng.standard_normal(ys_ref[k].shape).astype(dtype)
        dx_ref = ref.backward(dy)
        dx = conv.backward(kind.asarray(dy))
        _check(kind, dx, dx_ref, dtype, f"dx{k}")
    assert conv.pending == 0
    # dw and db: the sums of both calls' gradients, accumulated in place
    _check(kind, conv.dw, ref.dw, dtype, "dw")
    _check(kind, conv.db, ref.db, dtype, "db")
    assert [g is p for g, p in zip(conv.gradients(), (conv.dw, conv.db))] == [True, True]
    # a plan per input shape, built like= the layer's arrays
    assert {p.arrays.key for p in conv._plans.values()} == {conv.arrays.key}
    # evaluation and need_dx=False, on the same kind
    _check(kind, conv(kind.asarray(xs[0]), grad=False), ys_ref[0], dtype, "grad=False")
    y = conv(kind.asarray(xs[0]))
    assert conv.backward(kind.asarray(np.ones(ys_ref[0].shape, dtype)), need_dx=False) is None
    conv.zero_grad()
    assert not kind.to_numpy(conv.dw).any() and not kind.to_numpy(conv.db).any()
    assert kind.is_kind(conv.dw) and kind.is_kind(y)


@pytest.mark.parametrize("name", KINDS)
def test_a_sequence_is_converted_to_the_layers_kind(name):
    kind = Kind(name)
    conv = fftconv.Conv1d(1, 2, 3, rng=0, dtype=np.float64, like=kind.like())
    ref = fftconv.Conv1d(1, 2, 3, rng=0, dtype=np.float64)
    x = [[[0.5, 1.0, -2.0, 3.0, 0.25]]]
    _check(kind, conv(x), ref(x), "float64", "y")
    dy = np.ones((1, 2, 3)).tolist()
    _check(kind, conv.backward(dy), ref.backward(dy), "float64", "dx")
    conv.w = [[[1.0, 0.0, -1.0]], [[0.5, 0.5, 0.5]]]
    conv.b = [1, -1]
    assert kind.is_kind(conv.w) and kind.is_kind(conv.b)
    assert conv.w.dtype == conv.b.dtype == kind.native("float64")
    np.testing.assert_array_equal(kind.to_numpy(conv.b), [1.0, -1.0])


def test_the_layers_dtype_may_be_the_librarys_own():
    conv = fftconv.Conv2d(2, 3, 3, rng=0, dtype=torch.float64, like=torch.empty(0))
    assert conv.dtype == np.float64 and conv.w.dtype == torch.float64
    conv = fftconv.Conv2d(2, 3, 3, rng=0, dtype=xp.float64, like=xp.empty(0))
    assert conv.dtype == np.float64 and conv.w.dtype == xp.float64
    conv = fftconv.Conv2d(2, 3, 3, rng=0, dtype=np.complex64, like=torch.empty(0))
    assert conv.w.dtype == torch.complex64
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: dtype must be a float or complex dtype "
                                        r"\(.*\): the layer's weights are trained by gradients, "
                                        r"got dtype=int32$"):
        fftconv.Conv2d(2, 3, 3, dtype=torch.int32, like=torch.empty(0))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: dtype=float16 has no equal in the "
                                        r"layer's array library \(an array of array_api_strict"):
        fftconv.Conv2d(2, 3, 3, dtype=np.float16, like=xp.empty(0))


def test_mixing_kinds_is_a_clear_error():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    on_torch = fftconv.Conv2d(2, 3, 3, rng=0, like=torch.empty(0))
    on_numpy = fftconv.Conv2d(2, 3, 3, rng=0)
    on_strict = fftconv.Conv2d(2, 3, 3, rng=0, like=xp.empty(0))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: x is a numpy array but this runs on "
                                        r"a torch tensor on cpu; pass x as that \(or build it "
                                        r"with like= an array of x's kind\)$"):
        on_torch(x)
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: x is a torch tensor on cpu but this "
                                        r"runs on a numpy array"):
        on_numpy(torch.from_numpy(x))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: x is a torch tensor on cpu but this "
                                        r"runs on an array of array_api_strict"):
        on_strict(torch.from_numpy(x))
    device1 = fftconv.Conv2d(2, 3, 3, rng=0, like=xp.empty((0,), device=xp.Device("device1")))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: x is an array of array_api_strict on "
                                        r".*CPU_DEVICE.* but this runs on .*device1"):
        device1(xp.asarray(x))
    # dy of another kind than the call's
    y = on_torch(torch.from_numpy(x))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d\.backward: dy is a numpy array but "
                                        r"this runs on a torch tensor on cpu"):
        on_torch.backward(np.ones(tuple(y.shape), np.float32))
    assert on_torch.pending == 1          # the call stays on the tape
    on_torch.backward(torch.ones_like(y))
    # parameters of another kind
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: w is a numpy array but this runs on a "
                                        r"torch tensor on cpu"):
        on_torch.w = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: b is a torch tensor on cpu but this "
                                        r"runs on a numpy array"):
        on_numpy.b = torch.zeros(3)
    on_torch.w = torch.zeros(3, 2, 3, 3)          # its own kind is fine
    assert not on_torch.w.any()
    # like= must be an array; a tensor that requires grad is refused
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: like must be an array .*got list$"):
        fftconv.Conv2d(2, 3, 3, like=[1.0])
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: x is a torch tensor that requires "
                                        r"grad"):
        on_torch(torch.from_numpy(x).requires_grad_())


def test_direct_needs_strided_views():
    with pytest.raises(ValueError, match=r"^fftconv\.Conv2d: algorithm='direct' views arrays with "
                                         r"explicit strides, which an array of array_api_strict"):
        fftconv.Conv2d(2, 3, 3, algorithm="direct", like=xp.empty(0))
    conv = fftconv.Conv2d(2, 3, 3, algorithm="direct", rng=0, like=torch.empty(0))
    y = conv(torch.ones(1, 2, 6, 6))
    np.testing.assert_allclose(y.numpy(), fftconv.Conv2d(2, 3, 3, rng=0)(np.ones((1, 2, 6, 6),
                                                                                np.float32)),
                               rtol=1e-5, atol=1e-6)
