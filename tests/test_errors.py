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
     r"padding must be one of \('valid', 'same', 'full'\), an int or a sequence, got padding='sam'"),
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
     r"fftconv\.backward: dy must have shape \(2, 6, 6, 6\) \(the shape of forward's output\), "
     r"got dy\.shape=\(2, 6, 6, 5\)"),
    (lambda: fwd(x=X.astype(str)), TypeError, r"fftconv\.forward: x must have a numeric dtype, got dtype=<U"),
    (lambda: fwd(w=W.astype(object)), TypeError, r"w must have a numeric dtype, got dtype=object"),
    (lambda: fwd(x=X.astype(bool)), TypeError, r"x must have a numeric dtype, got dtype=bool"),
    (lambda: bwd(dy=DY.astype("datetime64[s]")), TypeError, r"dy must have a numeric dtype"),
    (lambda: fwd(b=np.array(["a"] * 6)), TypeError, r"b must have a numeric dtype"),
    (lambda: fwd(x=X.astype(np.longdouble)), TypeError, r"x has extended precision dtype"),
    (lambda: fwd(x=[[[1.0, 2.0], [3.0]]]), ValueError,
     r"fftconv\.forward: x must be an array or a rectangular nested sequence"),
    (lambda: fwd(algorithm="fast"), ValueError, r"algorithm must be one of \('auto', 'fft', 'direct', 'overlap_add'\), got algorithm='fast'"),
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
    with pytest.raises(ValueError, match=r"fftconv\.plan: max_workspace_bytes must be None or an int"):
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
    with pytest.raises(ValueError, match=r"fftconv\.configure: planning_timelimit must be > 0 seconds, "
                                         r"got planning_timelimit='x'"):
        fftconv.configure(planning_timelimit="x")
    with pytest.raises(ValueError, match=r"max_workspace_bytes must be None or an int >= 1, "
                                         r"got max_workspace_bytes=0"):
        fftconv.configure(max_workspace_bytes=0)
    with pytest.raises(ValueError, match=r"fftconv\.configure: measure must be a bool, got measure=1"):
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
