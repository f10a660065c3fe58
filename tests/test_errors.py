"""Bad input: a clear TypeError/ValueError naming function, parameter, rule and value,
raised before any transform runs (CONVENTIONS §5)."""
import numpy as np
import pytest

import fftconv

X = np.zeros((2, 4, 8, 8))
W = np.zeros((6, 4, 3, 3))
DY = np.zeros((2, 6, 6, 6))


def fwd(x=X, w=W, b=None, **kw):
    return fftconv.forward(x, w, b, **kw)


def bwd(dy=DY, x=X, w=W, **kw):
    return fftconv.backward(dy, x, w, **kw)


CASES = [
    # (call, exception, regex)
    (lambda: fwd(x=np.zeros((2, 4))), ValueError,
     r"fftconv\.forward: x must have shape \(N, C_in, \*spatial\) .*got x\.shape=\(2, 4\)"),
    (lambda: fwd(w=np.zeros((6, 4, 3))), ValueError,
     r"fftconv\.forward: w must have the same number of dimensions as x .*w\.shape=\(6, 4, 3\)"),
    (lambda: fwd(w=np.zeros((6, 3, 3, 3))), ValueError,
     r"w\.shape\[1\] must equal C_in // groups = 4, got w\.shape=\(6, 3, 3, 3\)"),
    (lambda: fwd(x=np.zeros((2, 8, 8, 8)), w=np.zeros((6, 2, 3, 3)), groups=3), ValueError,
     r"fftconv\.forward: groups must divide C_in, got groups=3 and C_in=8"),
    (lambda: fwd(x=np.zeros((2, 8, 8, 8)), w=np.zeros((6, 2, 3, 3)), groups=4), ValueError,
     r"groups must divide C_out, got groups=4 and C_out=6"),
    (lambda: fwd(groups=0), ValueError, r"groups must be >= 1, got groups=0"),
    (lambda: fwd(groups=-2), ValueError, r"groups must be >= 1, got groups=-2"),
    (lambda: fwd(groups=1.0), TypeError, r"groups must be an int, got groups=1\.0"),
    (lambda: fwd(stride=0), ValueError, r"stride must be >= 1 on every axis, got stride=0"),
    (lambda: fwd(stride=(1, -1)), ValueError, r"stride must be >= 1 on every axis, got stride=\(1, -1\)"),
    (lambda: fwd(dilation=0), ValueError, r"dilation must be >= 1 on every axis, got dilation=0"),
    (lambda: fwd(stride=(1, 1, 1)), ValueError,
     r"stride must have one entry per spatial axis \(2\), got 3 in stride=\(1, 1, 1\)"),
    (lambda: fwd(dilation=(2,)), ValueError,
     r"dilation must have one entry per spatial axis \(2\), got 1 in dilation=\(2,\)"),
    (lambda: fwd(stride=1.5), TypeError, r"stride must be an int or a sequence of 2 ints, got stride=1\.5"),
    (lambda: fwd(stride=(1, 2.0)), TypeError, r"stride must contain only ints, got stride=\(1, 2\.0\)"),
    (lambda: fwd(stride=True), TypeError, r"stride must be an int or a sequence"),
    (lambda: fwd(padding="sam"), ValueError,
     r"padding must be one of \('valid', 'same', 'full', 'causal'\), an int or a sequence, got padding='sam'"),
    (lambda: fwd(padding=-1), ValueError, r"padding must be >= 0, got padding=-1"),
    (lambda: fwd(padding=((0, -1), (0, 0))), ValueError, r"padding must be >= 0, got padding="),
    (lambda: fwd(padding=1.5), TypeError, r"padding must be a mode string, an int or a sequence, got padding=1\.5"),
    (lambda: fwd(padding=(1.0, 1)), TypeError, r"padding entries must be ints or \(lo, hi\) pairs"),
    (lambda: fwd(padding=(1, 1, 1)), ValueError,
     r"padding must have one entry per spatial axis \(2\), got 3 in padding=\(1, 1, 1\)"),
    (lambda: fwd(padding=((1, 2, 3), (0, 0))), TypeError, r"padding entries must be ints or \(lo, hi\) pairs"),
    (lambda: fwd(w=np.zeros((6, 4, 9, 3))), ValueError,
     r"fftconv\.forward: the dilated kernel \(9, 3\) is larger than the padded input \(8, 8\)"),
    (lambda: fwd(dilation=4), ValueError, r"the dilated kernel \(9, 9\) is larger than the padded input"),
    (lambda: fwd(w=np.zeros((6, 4, 0, 3))), ValueError,
     r"kernel axes must have size >= 1, got w\.shape=\(6, 4, 0, 3\)"),
    (lambda: fwd(b=np.zeros(5)), ValueError, r"b must have shape \(C_out,\) = \(6,\), got b\.shape=\(5,\)"),
    (lambda: fwd(b=np.zeros((6, 1))), ValueError, r"b must have shape \(C_out,\) = \(6,\)"),
    (lambda: bwd(dy=np.zeros((2, 6, 6, 5))), ValueError,
     r"fftconv\.backward: dy must have shape \(2, 6, 6, 6\) \(forward's output with "
     r"padding='valid', stride=1; pass backward the layer keywords forward ran with\), "
     r"got dy\.shape=\(2, 6, 6, 5\)"),
    (lambda: fwd(x=X.astype(str)), TypeError, r"fftconv\.forward: x must have a numeric dtype, got dtype=<U"),
    (lambda: fwd(w=W.astype(object)), TypeError, r"w must have a numeric dtype, got dtype=object"),
    (lambda: fwd(x=X.astype(bool)), TypeError, r"x must have a numeric dtype, got dtype=bool"),
    (lambda: bwd(dy=DY.astype("datetime64[s]")), TypeError, r"dy must have a numeric dtype"),
    (lambda: fwd(b=np.array(["a"] * 6)), TypeError, r"b must have a numeric dtype"),
    (lambda: fwd(x=X.astype(np.longdouble)), TypeError, r"x has extended precision dtype"),
    (lambda: fwd(x=[[[1.0, 2.0], [3.0]]]), ValueError,
     r"fftconv\.forward: x must be an array or a rectangular nested sequence"),
    (lambda: fwd(algorithm="fast"), ValueError, r"algorithm must be one of \('auto', 'fft', 'direct', 'overlap_add', 'winograd', 'fft_tiles'\), got algorithm='fast'"),
    (lambda: fwd(flip_kernel="yes"), TypeError, r"flip_kernel must be a bool, got flip_kernel='yes'"),
    (lambda: fwd(x=np.zeros((2, 0, 8, 8)), w=np.zeros((6, 0, 3, 3))), ValueError,
     r"channel counts must be >= 1, got C_in=0"),
]

if np.dtype(np.longdouble).itemsize <= 8:  # platforms where long double is double
    CASES = [c for c in CASES if "extended" not in c[2]]


@pytest.mark.parametrize("call, exc, pattern", CASES)
def test_bad_input_message(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("algorithm", ["fft", "direct"])
def test_backward_checks_same_rules(algorithm):
    with pytest.raises(ValueError, match=r"fftconv\.backward: groups must divide C_in, got groups=3"):
        fftconv.backward(DY, X, W, groups=3, algorithm=algorithm)
    with pytest.raises(ValueError, match=r"fftconv\.backward: stride must be >= 1"):
        fftconv.backward(DY, X, W, stride=0, algorithm=algorithm)


def test_plan_rejects_shapes_it_was_not_built_for():
    p = fftconv.plan(X.shape, W.shape, dtype=np.float64)
    with pytest.raises(ValueError, match=r"Plan\.forward: x must have shape \(2, 4, 8, 8\) "
                                         r"\(the shape this plan was built for\), got x\.shape=\(3, 4, 8, 8\)"):
        p.forward(np.zeros((3, 4, 8, 8)), W)
    with pytest.raises(ValueError, match=r"Plan\.forward: w must have shape \(6, 4, 3, 3\)"):
        p.forward(X, np.zeros((6, 4, 5, 5)))
    with pytest.raises(RuntimeError, match=r"Plan\.backward: call Plan\.forward\(x, w, b\) before"):
        p.backward(DY)
    p.forward(X, W)
    with pytest.raises(ValueError, match=r"Plan\.backward: dy must have shape \(2, 6, 6, 6\)"):
        p.backward(np.zeros((2, 6, 6, 7)))


def test_plan_rejects_other_dtypes_instead_of_casting():
    p = fftconv.plan(X.shape, W.shape, dtype=np.float32)
    with pytest.raises(TypeError, match=r"Plan\.forward: x has dtype=float64 but this plan was built "
                                        r"for dtype=float32; build a plan with dtype=float64"):
        p.forward(X, W.astype(np.float32))
    x32, w32 = X.astype(np.float32), W.astype(np.float32)
    with pytest.raises(TypeError, match=r"Plan\.forward: b has dtype=complex128 but this plan"):
        p.forward(x32, w32, np.ones(6) * 1j)
    with pytest.raises(TypeError, match=r"Plan\.forward: b has dtype=float64 but this plan"):
        p.forward(x32, w32, np.ones(6))
    with pytest.raises(TypeError, match=r"Plan\.forward: x has dtype=int64 but this plan"):
        p.forward(X.astype(np.int64), w32)
    p.forward(X.astype(np.int8), w32)  # small ints promote to float32 without loss
    with pytest.raises(ValueError, match=r"Plan\.forward: b must have shape \(6,\)"):
        p.forward(x32, w32, np.ones(5, np.float32))
    with pytest.raises(TypeError, match=r"fftconv\.plan: dtype must be a numpy dtype, got dtype='nope'"):
        fftconv.plan(X.shape, W.shape, dtype="nope")
    with pytest.raises(TypeError, match=r"fftconv\.plan: dtype must have a numeric dtype, got dtype=<U1"):
        fftconv.plan(X.shape, W.shape, dtype="U1")
    with pytest.raises(TypeError, match=r"fftconv\.plan: x_shape must be a tuple of ints, "
                                        r"got x_shape=\(2, 4, 8\.5, 8\)"):
        fftconv.plan((2, 4, 8.5, 8), W.shape, dtype=np.float64)
    with pytest.raises(TypeError, match=r"fftconv\.plan: w_shape must be a tuple of ints, got w_shape=5"):
        fftconv.plan(X.shape, 5, dtype=np.float64)
    with pytest.raises(TypeError, match=r"fftconv\.plan: x_shape must be a tuple of ints"):
        fftconv.plan((True, 4, 8, 8), W.shape, dtype=np.float64)
    with pytest.raises(ValueError, match=r"fftconv\.plan: x_shape must not have negative sizes"):
        fftconv.plan((2, 4, -8, 8), W.shape, dtype=np.float64)
    with pytest.raises(TypeError, match=r"fftconv\.plan: dtype must be a numpy dtype, got dtype=None"):
        fftconv.plan(X.shape, W.shape, dtype=None)
    with pytest.raises(TypeError, match=r"fftconv\.plan: max_workspace_bytes must be None or an int"):
        fftconv.plan(X.shape, W.shape, dtype=np.float64, max_workspace_bytes=True)
    with pytest.raises(ValueError, match=r"fftconv\.plan: groups must divide C_in, got groups=3 and C_in=4"):
        fftconv.plan(X.shape, W.shape, dtype=np.float64, groups=3)


def test_configure_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"fftconv\.configure: backend must be one of"):
        fftconv.configure(backend="mkl")
    with pytest.raises(ValueError, match=r"fftconv\.configure: threads must be an int >= 1, got threads=0"):
        fftconv.configure(threads=0)
    with pytest.raises(ValueError, match=r"planner_effort must be one of"):
        fftconv.configure(planner_effort="FFTW_FAST")
    with pytest.raises(TypeError, match=r"fftconv\.configure: .*unexpected keyword"):
        fftconv.configure(colour="red")
    with pytest.raises(TypeError, match=r"fftconv\.configure: planning_timelimit must be a number "
                                        r"of seconds > 0, got planning_timelimit='x'"):
        fftconv.configure(planning_timelimit="x")
    with pytest.raises(ValueError, match=r"max_workspace_bytes must be None or an int >= 1, "
                                         r"got max_workspace_bytes=0"):
        fftconv.configure(max_workspace_bytes=0)
    with pytest.raises(TypeError, match=r"fftconv\.configure: measure must be a bool, got measure=1"):
        fftconv.configure(measure=1)


def test_errors_happen_before_any_transform(monkeypatch):
    """A bad bias is caught before x or w is transformed, and nothing is modified."""
    from fftconv import transforms
    calls = []
    monkeypatch.setattr(transforms.ForwardTransform, "__call__",
                        lambda self, *a: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    x, w = np.ones((2, 4, 8, 8)), np.ones((6, 4, 3, 3))
    with pytest.raises(ValueError, match="b must have shape"):
        fftconv.forward(x, w, np.zeros(5))
    with pytest.raises(ValueError, match="dy must have shape"):
        fftconv.backward(np.zeros((2, 6, 5, 5)), x, w)
    assert calls == []
    assert (x == 1).all() and (w == 1).all()


# -- the layer keywords: transposed, output_padding, padding_mode, layout ----------------
WT = np.zeros((4, 3, 3, 3))  # transposed weights (C_in, C_out // groups, *k) for X
XL = np.zeros((2, 9, 8, 4))  # channels_last x (N, *spatial, C_in)
WL = np.zeros((3, 3, 4, 6))  # channels_last w (*k, C_in // groups, C_out)


def tfwd(x=X, w=WT, b=None, **kw):
    return fftconv.forward(x, w, b, transposed=True, **kw)


LAYER_CASES = [
    (lambda: fwd(output_padding=0.0), TypeError,
     r"fftconv\.forward: output_padding must be an int or a sequence of 2 ints, got output_padding=0\.0"),
    (lambda: fwd(output_padding=np.array([1, 0])), ValueError,
     r"fftconv\.forward: output_padding is for transposed=True, got output_padding=array\(\[1, 0\]\) "
     r"with transposed=False"),
    (lambda: fftconv.forward(np.ones((1, 2, 0)), np.ones((2, 3, 3)), transposed=True, stride=2,
                             output_padding=1), ValueError,
     r"fftconv\.forward: x must have at least one sample on every spatial axis for a transposed "
     r"convolution, got x\.shape=\(1, 2, 0\)"),
    (lambda: fftconv.vjp(X, W)[1](np.zeros((2, 6, 6, 6)), need_dx="no"), TypeError,
     r"fftconv\.vjp pullback: need_dx must be a bool, got need_dx='no'"),
    (lambda: fftconv.forward(XL, np.zeros((3, 3, 3, 5)), transposed=True, layout="channels_last"),
     ValueError, r"fftconv\.forward: w\.shape\[-1\] must equal C_in = 4 for a transposed "
                 r"convolution, got w\.shape=\(3, 3, 3, 5\)"),
    (lambda: fwd(layout="NHWC"), ValueError,
     r"fftconv\.forward: layout must be one of \('channels_first', 'channels_last'\), "
     r"got layout='NHWC'"),
    (lambda: fwd(layout=None), TypeError, r"fftconv\.forward: layout must be one of .*got layout=None"),
    (lambda: fwd(padding_mode="wrap"), ValueError,
     r"fftconv\.forward: padding_mode must be one of \('zeros', 'circular', 'reflect', 'replicate'\), "
     r"got padding_mode='wrap'"),
    (lambda: fwd(padding_mode="Zeros"), ValueError,
     r"padding_mode must be one of .*got padding_mode='Zeros'"),
    (lambda: fwd(transposed="yes"), TypeError,
     r"fftconv\.forward: transposed must be a bool, got transposed='yes'"),
    (lambda: fwd(transposed=1), TypeError, r"fftconv\.forward: transposed must be a bool, got transposed=1"),
    (lambda: tfwd(w=np.zeros((3, 2, 3, 3))), ValueError,
     r"fftconv\.forward: w\.shape\[0\] must equal C_in = 4 for a transposed convolution, "
     r"got w\.shape=\(3, 2, 3, 3\) with x\.shape=\(2, 4, 8, 8\) and groups=1"),
    (lambda: tfwd(groups=3), ValueError,
     r"fftconv\.forward: groups must divide C_in, got groups=3 and C_in=4"),
    (lambda: fwd(output_padding=1), ValueError,
     r"fftconv\.forward: output_padding is for transposed=True, got output_padding=1 with transposed=False"),
    (lambda: fwd(output_padding=(0, 1)), ValueError,
     r"output_padding is for transposed=True, got output_padding=\(0, 1\) with transposed=False"),
    (lambda: tfwd(padding="same", stride=2, output_padding=1), ValueError,
     r"fftconv\.forward: output_padding must be 0 with padding='same' \(the output is n \* stride long\), "
     r"got output_padding=1"),
    (lambda: tfwd(stride=2, output_padding=2), ValueError,
     r"fftconv\.forward: output_padding must be smaller than stride or dilation on every axis, "
     r"got output_padding=2 with stride=\(2, 2\) and dilation=\(1, 1\)"),
    (lambda: tfwd(stride=2, dilation=(3, 1), output_padding=(3, 1)), ValueError,
     r"output_padding must be smaller than stride or dilation on every axis, got output_padding=\(3, 1\) "
     r"with stride=\(2, 2\) and dilation=\(3, 1\)"),
    (lambda: tfwd(output_padding=1), ValueError,  # stride 1, dilation 1: no room at all
     r"output_padding must be smaller than stride or dilation .*got output_padding=1 with stride=\(1, 1\)"),
    (lambda: tfwd(stride=2, output_padding=-1), ValueError,
     r"fftconv\.forward: output_padding must be >= 0 on every axis, got output_padding=-1"),
    (lambda: tfwd(stride=2, output_padding=(1,)), ValueError,
     r"output_padding must have one entry per spatial axis \(2\), got 1 in output_padding=\(1,\)"),
    (lambda: tfwd(stride=2, output_padding=0.5), TypeError,
     r"fftconv\.forward: output_padding must be an int or a sequence of 2 ints, got output_padding=0\.5"),
    (lambda: tfwd(padding=1, padding_mode="reflect"), ValueError,
     r"fftconv\.forward: padding_mode must be 'zeros' for a transposed convolution \(as PyTorch\), "
     r"got padding_mode='reflect'"),
    (lambda: tfwd(padding_mode="circular"), ValueError,
     r"padding_mode must be 'zeros' for a transposed convolution .*got padding_mode='circular'"),
    (lambda: fwd(padding=(8, 1), padding_mode="reflect"), ValueError,
     r"fftconv\.forward: padding_mode='reflect' needs padding smaller than the input on every axis, "
     r"got padding \(8, 8\) for size 8 on spatial axis 0"),
    (lambda: fwd(padding=((1, 1), (0, 8)), padding_mode="reflect"), ValueError,
     r"padding_mode='reflect' needs padding smaller than the input .*got padding \(0, 8\) for size 8 "
     r"on spatial axis 1"),
    (lambda: fwd(padding=9, padding_mode="circular"), ValueError,
     r"fftconv\.forward: padding_mode='circular' needs padding no larger than the input on every axis, "
     r"got padding \(9, 9\) for size 8 on spatial axis 0"),
    (lambda: tfwd(x=np.zeros((2, 4, 3, 3)), padding=5), ValueError,
     r"fftconv\.forward: the padding \(\(5, 5\), \(5, 5\)\) removes the whole output of the transposed "
     r"convolution \(output size \(-5, -5\)\); got x\.shape=\(2, 4, 3, 3\), w\.shape=\(4, 3, 3, 3\)"),
    (lambda: tfwd(x=np.zeros((2, 4, 3, 3)), padding=((0, 0), (3, 2))), ValueError,
     r"the padding \(\(0, 0\), \(3, 2\)\) removes the whole output of the transposed convolution "
     r"\(output size \(5, 0\)\)"),
    (lambda: fwd(paddings=1), TypeError,
     r"fftconv\.forward: got unexpected keyword argument\(s\) paddings; its keywords are padding, "
     r"stride, dilation, groups, flip_kernel, transposed, output_padding, padding_mode, layout, "
     r"algorithm, max_workspace_bytes, measure$"),
    (lambda: fwd(foo=2, channels_last=True), TypeError,
     r"fftconv\.forward: got unexpected keyword argument\(s\) channels_last, foo; its keywords"),
    (lambda: bwd(outputpadding=1), TypeError,
     r"fftconv\.backward: got unexpected keyword argument\(s\) outputpadding"),
    (lambda: fftconv.vjp(X, W, mode="same"), TypeError,
     r"fftconv\.vjp: got unexpected keyword argument\(s\) mode"),
    # channels_last: messages quote the caller's shapes, not the channels-first ones
    (lambda: fwd(x=XL, w=np.zeros((3, 3, 3, 6)), layout="channels_last"), ValueError,
     r"fftconv\.forward: w\.shape\[-2\] must equal C_in // groups = 4, got w\.shape=\(3, 3, 3, 6\) "
     r"with x\.shape=\(2, 9, 8, 4\)"),
    (lambda: fwd(x=XL, w=np.zeros((3, 3, 4)), layout="channels_last"), ValueError,
     r"fftconv\.forward: w must have the same number of dimensions as x \(\*kernel, C_in // groups, C_out\), "
     r"got w\.shape=\(3, 3, 4\) and x\.shape=\(2, 9, 8, 4\)"),
    (lambda: fwd(x=np.zeros((2, 4)), w=WL, layout="channels_last"), ValueError,
     r"fftconv\.forward: x must have shape \(N, \*spatial, C_in\) with at least one spatial axis, "
     r"got x\.shape=\(2, 4\)"),
    (lambda: fwd(x=XL, w=np.zeros((10, 3, 4, 6)), layout="channels_last"), ValueError,
     r"the dilated kernel \(10, 3\) is larger than the padded input \(9, 8\), which leaves no output; "
     r"got x\.shape=\(2, 9, 8, 4\), w\.shape=\(10, 3, 4, 6\)"),
    (lambda: fwd(x=XL, w=WL, b=np.zeros(4), layout="channels_last"), ValueError,
     r"b must have shape \(C_out,\) = \(6,\), got b\.shape=\(4,\)"),
    (lambda: bwd(dy=np.zeros((2, 6, 7, 6)), x=XL, w=WL, layout="channels_last"), ValueError,
     r"fftconv\.backward: dy must have shape \(2, 7, 6, 6\) \(forward's output with padding='valid', "
     r"stride=1, layout='channels_last'; .*\), got dy\.shape=\(2, 6, 7, 6\)"),
    (lambda: bwd(dy=np.zeros((2, 3, 8, 8)), w=WT, transposed=True), ValueError,
     r"fftconv\.backward: dy must have shape \(2, 3, 10, 10\) \(forward's output with "
     r"padding='valid', stride=1, transposed=True; .*\), got dy\.shape=\(2, 3, 8, 8\)"),
    (lambda: bwd(w=WT, transposed=True, output_padding=4, stride=2), ValueError,
     r"fftconv\.backward: output_padding must be smaller than stride or dilation"),
]


@pytest.mark.parametrize("call, exc, pattern", LAYER_CASES)
def test_bad_layer_keyword_message(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_pullback_checks_dy():
    y, pullback = fftconv.vjp(X, W)
    with pytest.raises(ValueError, match=r"fftconv\.vjp pullback: dy must have shape \(2, 6, 6, 6\) .*"
                                         r"got dy\.shape=\(2, 6, 6, 5\)"):
        pullback(np.zeros((2, 6, 6, 5)))
    with pytest.raises(TypeError, match=r"fftconv\.vjp pullback: dy must have a numeric dtype, got dtype=<U"):
        pullback(np.zeros(y.shape).astype(str))
    _, pullback32 = fftconv.vjp(X.astype(np.float32), W.astype(np.float32))
    with pytest.raises(TypeError, match=r"fftconv\.vjp pullback: dy has dtype=float64 but .*dtype=float32"):
        pullback32(np.zeros(y.shape))
    with pytest.raises(TypeError, match=r"fftconv\.vjp pullback: dy has dtype=complex64 but .*dtype=float32"):
        pullback32(np.zeros(y.shape, np.complex64))
    pullback32(np.zeros(y.shape, np.float32))  # the right one still works afterwards
    # channels_last: the caller's layout
    yl, pullback_l = fftconv.vjp(XL, WL, layout="channels_last")
    assert yl.shape == (2, 7, 6, 6)
    with pytest.raises(ValueError, match=r"fftconv\.vjp pullback: dy must have shape \(2, 7, 6, 6\) .*"
                                         r"got dy\.shape=\(2, 6, 7, 6\)"):
        pullback_l(np.zeros((2, 6, 7, 6)))
    # a plan's pullback
    p = fftconv.plan(X.shape, W.shape, dtype=np.float64)
    _, pullback_p = p.vjp(X, W)
    with pytest.raises(ValueError, match=r"Plan\.vjp pullback: dy must have shape \(2, 6, 6, 6\) "
                                         r"\(the shape of y from the forward pass\), "
                                         r"got dy\.shape=\(2, 6, 6, 7\)"):
        pullback_p(np.zeros((2, 6, 6, 7)))
    p.forward(X, W)
    with pytest.raises(TypeError, match=r"Plan\.backward: dy has dtype=complex128 but the forward "
                                        r"pass ran in dtype=float64; cast dy to float64"):
        p.backward(np.zeros((2, 6, 6, 6), np.complex128))


def test_vjp_checks_the_layer_keywords():
    with pytest.raises(ValueError,
                       match=r"fftconv\.vjp: padding_mode must be one of .*got padding_mode='wrap'"):
        fftconv.vjp(X, W, padding_mode="wrap")
    with pytest.raises(ValueError, match=r"fftconv\.vjp: output_padding is for transposed=True"):
        fftconv.vjp(X, W, output_padding=1)
    with pytest.raises(TypeError, match=r"fftconv\.vjp: transposed must be a bool, got transposed=None"):
        fftconv.vjp(X, W, transposed=None)


def test_plan_checks_the_layer_keywords():
    plan = fftconv.plan
    with pytest.raises(ValueError, match=r"fftconv\.plan: layout must be one of \('channels_first', "
                                         r"'channels_last'\), got layout='NCHW'"):
        plan(X.shape, W.shape, dtype=np.float64, layout="NCHW")
    with pytest.raises(ValueError, match=r"fftconv\.plan: output_padding is for transposed=True, "
                                         r"got output_padding=1 with transposed=False"):
        plan(X.shape, W.shape, dtype=np.float64, output_padding=1)
    with pytest.raises(ValueError, match=r"fftconv\.plan: output_padding must be smaller than stride or "
                                         r"dilation on every axis, got output_padding=3"):
        plan(X.shape, WT.shape, dtype=np.float64, transposed=True, stride=2, output_padding=3)
    with pytest.raises(ValueError, match=r"fftconv\.plan: padding_mode='reflect' needs padding smaller "
                                         r"than the input"):
        plan(X.shape, W.shape, dtype=np.float64, padding=8, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"fftconv\.plan: w_shape\[0\] must equal C_in = 4 for a "
                                         r"transposed convolution, got w_shape=\(6, 4, 3, 3\)"):
        plan(X.shape, W.shape, dtype=np.float64, transposed=True)
    with pytest.raises(TypeError, match=r"fftconv\.plan: got unexpected keyword argument\(s\) paddings; "
                                        r"its keywords are dtype, padding, .*, measure, tile, like$"):
        plan(X.shape, W.shape, dtype=np.float64, paddings=1)
    with pytest.raises(TypeError, match=r"fftconv\.plan: transposed must be a bool, got transposed='no'"):
        plan(X.shape, W.shape, dtype=np.float64, transposed="no")
    # a transposed channels_last plan rejects the channels-first shapes it was not built for
    p = plan(XL.shape, (3, 3, 6, 4), dtype=np.float64, layout="channels_last", transposed=True)
    with pytest.raises(ValueError, match=r"Plan\.forward: x must have shape \(2, 9, 8, 4\)"):
        p.forward(np.zeros((2, 4, 9, 8)), np.zeros((3, 3, 6, 4)))
    with pytest.raises(RuntimeError, match=r"Plan\.backward: call Plan\.forward\(x, w, b\) before"):
        p.backward(np.zeros(p.out_shape))
