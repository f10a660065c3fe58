"""Seeded random sweep crossing every option, for both algorithms, forward and backward,
against the float64 oracle (CONVENTIONS sections 1-4)."""

import functools

import numpy as np
import pytest

import fftconv
import oracle
from conftest import ALGORITHMS, assert_close, random_array

PAD_KINDS = ("valid", "same", "full", "int", "ints", "pairs")


def _axis_param(rng, nd, choices):
    """An int or a per-axis tuple."""
    if rng.random() < 0.4:
        return int(rng.choice(choices))
    return tuple(int(v) for v in rng.choice(choices, size=nd))


def _per_axis(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _make_config(rng, idx, nd, pad_kind, flip, force=None):
    force = force or {}
    while True:
        n_batch = int(rng.integers(1, 4))
        gkind = rng.choice(["one", "one", "few", "depthwise"])
        if gkind == "one":
            groups, c_g, mult = 1, int(rng.integers(1, 4)), int(rng.integers(1, 4))
        elif gkind == "few":
            groups, c_g, mult = int(rng.integers(2, 4)), int(rng.integers(1, 3)), int(
                rng.integers(1, 3))
        else:  # depthwise: one input channel per group, C_out a multiple of C_in
            groups, c_g, mult = int(rng.integers(2, 4)), 1, int(rng.integers(1, 3))
        if nd >= 4:  # keep the 4-D / 5-D cases small
            c_g, mult = 1, 1
            groups = 1 if gkind == "one" else 2
            n_batch = min(n_batch, 2)
        c_in, c_out = groups * c_g, groups * mult
        lo_n, hi_n = {1: (4, 12), 2: (4, 10), 3: (4, 7)}.get(nd, (3, 5))
        spatial = tuple(int(v) for v in rng.integers(lo_n, hi_n + 1, size=nd))
        kmax = 4 if nd <= 2 else 3
        kernel = tuple(int(v) for v in rng.integers(1, kmax + 1, size=nd))
        kernel = force.get("kernel", kernel)
        stride = force.get("stride", _axis_param(rng, nd, [1, 1, 2, 3] if nd <= 3 else [1, 2]))
        dilation = force.get("dilation", _axis_param(rng, nd, [1, 1, 2]))
        if pad_kind in ("valid", "same", "full"):
            padding = pad_kind
        elif pad_kind == "int":
            padding = int(rng.integers(0, 3))
        elif pad_kind == "ints":
            padding = [int(v) for v in rng.integers(0, 3, size=nd)]
        else:
            padding = [(int(a), int(b)) for a, b in rng.integers(0, 3, size=(nd, 2))]
            if rng.random() < 0.5:
                padding = tuple(padding)
        try:
            out = oracle.output_spatial(spatial, kernel, padding, stride, dilation, flip)
        except ValueError:
            continue  # empty output: draw again
        return dict(
            idx=idx, nd=nd, N=n_batch, C_in=c_in, C_out=c_out, groups=groups, spatial=spatial,
            kernel=kernel, padding=padding, pad_kind=pad_kind, stride=stride, dilation=dilation,
            flip_kernel=flip, bias=bool(rng.random() < 0.6), out=out)


def _build_configs(seed=1234, reps=1):
    rng = np.random.default_rng(seed)
    cfgs = []
    for _ in range(reps):
        for nd in (1, 2, 3, 4, 5):
            for pad_kind in PAD_KINDS:
                for flip in (False, True):
                    cfgs.append(_make_config(rng, len(cfgs), nd, pad_kind, flip))
    # explicit coverage of the subtle "same" rule: stride > 1 with even kernels, both flips
    for nd in (1, 2, 3):
        for flip in (False, True):
            kernel = tuple([2, 4, 2][:nd])
            stride = (2, 3, 2)[:nd] if nd > 1 else 2
            cfgs.append(_make_config(rng, len(cfgs), nd, "same", flip,
                                     force=dict(kernel=kernel, stride=stride)))
    # even kernel + dilation in "same", and depthwise with stride
    cfgs.append(_make_config(rng, len(cfgs), 2, "same", True,
                             force=dict(kernel=(2, 4), stride=1, dilation=(2, 3))))
    cfgs.append(_make_config(rng, len(cfgs), 2, "same", False,
                             force=dict(kernel=(4, 2), stride=(3, 2), dilation=(1, 2))))
    return cfgs


CONFIGS = _build_configs()
# a bigger sweep with other draws, marked slow (the fast default suite does not need it)
SLOW_CONFIGS = _build_configs(seed=98765, reps=6)
_ALL = {"fast": CONFIGS, "slow": SLOW_CONFIGS}


def _cfg_id(c):
    return f"c{c['idx']}-{c['nd']}d-{'flip' if c['flip_kernel'] else 'corr'}-{c['pad_kind']}"


def _kwargs(c):
    return dict(padding=c["padding"], stride=c["stride"], dilation=c["dilation"],
                groups=c["groups"], flip_kernel=c["flip_kernel"])


def _expected_out(c):
    """Output size formula of CONVENTIONS section 2, written out again here."""
    nd = c["nd"]
    s, d = _per_axis(c["stride"], nd), _per_axis(c["dilation"], nd)
    out = []
    for a in range(nd):
        n, k = c["spatial"][a], c["kernel"][a]
        ke = d[a] * (k - 1) + 1
        p = c["padding"]
        if p == "valid":
            lo = hi = 0
        elif p == "full":
            lo = hi = ke - 1
        elif p == "same":
            o = -(-n // s[a])
            total = max((o - 1) * s[a] + ke - n, 0)
            lo = total - total // 2 if c["flip_kernel"] else total // 2
            hi = total - lo
        elif isinstance(p, int):
            lo = hi = p
        elif isinstance(p[a], int):
            lo = hi = p[a]
        else:
            lo, hi = p[a]
        out.append((n + lo + hi - ke) // s[a] + 1)
    if c["padding"] == "same":
        assert out == [-(-n // ss) for n, ss in zip(c["spatial"], s)]
    return (c["N"], c["C_out"]) + tuple(out)


@functools.lru_cache(maxsize=None)
def _case(idx, dtype_name, which="fast"):
    """Inputs (quantised to dtype) and the float64 oracle results for config idx."""
    c = _ALL[which][idx]
    dtype = np.dtype(dtype_name)
    rng = np.random.default_rng((1000 if which == "fast" else 5000) + idx)
    x = random_array(rng, (c["N"], c["C_in"]) + c["spatial"], dtype)
    w = random_array(rng, (c["C_out"], c["C_in"] // c["groups"]) + c["kernel"], dtype)
    b = random_array(rng, (c["C_out"],), dtype) if c["bias"] else None
    dy = random_array(rng, (c["N"], c["C_out"]) + c["out"], dtype)
    y_ref = oracle.oracle_forward(x, w, b, **_kwargs(c))
    g_ref = oracle.oracle_backward(dy, x, w, **_kwargs(c))
    return x, w, b, dy, y_ref, g_ref


def _check(c, dtype, y, grads, y_ref, g_ref):
    dtype = np.dtype(dtype)
    assert y.shape == _expected_out(c)
    assert y.dtype == dtype, f"forward returned {y.dtype} for {dtype} input"
    assert_close(y, y_ref, dtype, "y")
    dx, dw, db = grads
    assert (grads.dx is dx) and (grads.dw is dw) and (grads.db is db)  # a namedtuple
    for name, got, ref in (("dx", dx, g_ref.dx), ("dw", dw, g_ref.dw), ("db", db, g_ref.db)):
        got = np.asarray(got)
        assert got.dtype == dtype, f"{name} returned {got.dtype} for {dtype} input"
        assert_close(got, ref, dtype, name)


REAL_CASES = [pytest.param(c, id=_cfg_id(c)) for c in CONFIGS]
COMPLEX_CASES = [pytest.param(c, id=_cfg_id(c)) for c in CONFIGS[::3]]


SWEEP = ([pytest.param(c.values[0], dt, id=f"{c.id}-{dt}") for c in REAL_CASES
          for dt in ("float64", "float32")]
         + [pytest.param(c.values[0], dt, id=f"{c.id}-{dt}") for c in COMPLEX_CASES
            for dt in ("complex128", "complex64")])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("c, dtype", SWEEP)
def test_sweep(c, dtype, algorithm):
    x, w, b, dy, y_ref, g_ref = _case(c["idx"], dtype)
    y = fftconv.forward(x, w, b, algorithm=algorithm, **_kwargs(c))
    grads = fftconv.backward(dy, x, w, algorithm=algorithm, **_kwargs(c))
    _check(c, dtype, y, grads, y_ref, g_ref)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
@pytest.mark.parametrize("c", [pytest.param(c, id=_cfg_id(c)) for c in CONFIGS[1::4]])
def test_sweep_plan(c, dtype, algorithm):
    x, w, b, dy, y_ref, g_ref = _case(c["idx"], dtype)
    p = fftconv.plan(x.shape, w.shape, dtype=np.dtype(dtype), algorithm=algorithm, **_kwargs(c))
    # a first call with other data: backward must use the x, w of the *last* forward
    rng = np.random.default_rng(7)
    y0 = p.forward(random_array(rng, x.shape, dtype), random_array(rng, w.shape, dtype), b)
    assert y0.shape == y_ref.shape
    y = p.forward(x, w, b)
    grads = p.backward(dy)
    _check(c, dtype, y, grads, y_ref, g_ref)
    # the plan is reusable: the same call again gives the same answer
    y2 = p.forward(x, w, b)
    assert_close(y2, y_ref, dtype, "y (second call)")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128", "complex64"])
@pytest.mark.parametrize("c", [pytest.param(c, id=_cfg_id(c)) for c in SLOW_CONFIGS])
def test_sweep_slow(c, dtype, algorithm):
    x, w, b, dy, y_ref, g_ref = _case(c["idx"], dtype, "slow")
    y = fftconv.forward(x, w, b, algorithm=algorithm, **_kwargs(c))
    grads = fftconv.backward(dy, x, w, algorithm=algorithm, **_kwargs(c))
    _check(c, dtype, y, grads, y_ref, g_ref)


def test_sweep_covers_every_option():
    """The sweep really crosses what it claims to (guards against a generator regression)."""
    nds = {c["nd"] for c in CONFIGS}
    assert nds == {1, 2, 3, 4, 5}
    kinds = set()
    for c in CONFIGS:
        p = c["padding"]
        kind = (p if isinstance(p, str) else "int" if isinstance(p, int)
                else "ints" if isinstance(p[0], int) else "pairs")
        assert kind == c["pad_kind"]
        kinds.add(kind)
    assert kinds == set(PAD_KINDS)
    assert any(c["groups"] > 1 and c["C_in"] == c["groups"] for c in CONFIGS)  # depthwise
    assert any(1 < c["groups"] < c["C_in"] for c in CONFIGS)
    assert any(c["bias"] for c in CONFIGS) and not all(c["bias"] for c in CONFIGS)
    assert any(c["N"] > 1 for c in CONFIGS)
    assert any(max(_per_axis(c["stride"], c["nd"])) > 1 for c in CONFIGS)
    assert any(max(_per_axis(c["dilation"], c["nd"])) > 1 for c in CONFIGS)
    assert any(c["padding"] == "same" and max(_per_axis(c["stride"], c["nd"])) > 1
               and any(k % 2 == 0 for k in c["kernel"]) and c["flip_kernel"] == f
               for c in CONFIGS for f in (False, True))
    assert any(c["flip_kernel"] for c in CONFIGS) and not all(c["flip_kernel"] for c in CONFIGS)


MEDIUM = [
    ((4, 8, 40, 40), (8, 8, 5, 5), dict(padding="same")),
    ((4, 8, 300), (8, 8, 31), dict(padding="full", flip_kernel=True)),
    ((2, 4, 16, 16, 16), (4, 4, 3, 3, 3), dict(padding="same", stride=2)),
    ((1, 3, 96, 96), (4, 3, 9, 9), dict(padding="valid", dilation=2)),
    ((4, 16, 24, 24), (16, 1, 7, 7), dict(padding="same", groups=16)),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", MEDIUM, ids=["2d-same", "1d-full-k31", "3d-s2", "2d-dil",
                                              "2d-depthwise"])
def test_medium_sizes_accuracy(case, dtype, algorithm):
    """Larger transforms than the random sweep, where FFT rounding has room to grow."""
    xs, ws, kw = case
    rng = np.random.default_rng(len(xs) * 100 + ws[-1])
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    b = random_array(rng, (ws[0],), dtype)
    y_ref = oracle.oracle_forward(x, w, b, **kw)
    dy = random_array(rng, y_ref.shape, dtype)
    g_ref = oracle.oracle_backward(dy, x, w, **kw)
    y = fftconv.forward(x, w, b, algorithm=algorithm, **kw)
    dx, dw, db = fftconv.backward(dy, x, w, algorithm=algorithm, **kw)
    for name, got, ref in (("y", y, y_ref), ("dx", dx, g_ref.dx), ("dw", dw, g_ref.dw),
                           ("db", db, g_ref.db)):
        assert got.dtype == np.dtype(dtype), name
        assert_close(got, ref, dtype, name)


def _edge(nd, n, k, padding="valid", stride=1, dilation=1, groups=1, flip=False, N=2, C_in=2,
          C_out=2, bias=True):
    spatial = (n,) * nd if isinstance(n, int) else n
    kernel = (k,) * nd if isinstance(k, int) else k
    return dict(idx=-1, nd=nd, N=N, C_in=C_in, C_out=C_out, groups=groups, spatial=spatial,
                kernel=kernel, padding=padding, stride=stride, dilation=dilation,
                flip_kernel=flip, bias=bias,
                out=oracle.output_spatial(spatial, kernel, padding, stride, dilation, flip))


EDGES = {
    "kernel-bigger-than-input-full": _edge(1, 3, 5, "full"),
    "kernel-bigger-than-input-same": _edge(2, (3, 4), (5, 6), "same"),
    "kernel-bigger-than-input-same-flip": _edge(2, (3, 4), (5, 6), "same", flip=True),
    "kernel-equals-input": _edge(2, (5, 4), (5, 4)),
    "1x1-kernel": _edge(3, 4, 1, groups=2, C_in=4, C_out=6),
    "stride-bigger-than-input": _edge(1, 5, 2, stride=7),
    "stride-bigger-than-kernel": _edge(2, 9, 2, stride=(4, 5), padding=1),
    "padding-bigger-than-kernel": _edge(1, 4, 2, padding=[(5, 0)]),
    "big-symmetric-padding": _edge(2, 3, 2, padding=4, stride=2),
    "dilation-with-k1": _edge(1, 6, 1, dilation=3, padding="same"),
    "dilated-kernel-wider-than-input-full": _edge(1, 4, 3, dilation=4, padding="full"),
    "same-stride-3-even": _edge(1, 10, 4, "same", stride=3, flip=True),
    "single-pixel-input-full": _edge(2, 1, 3, "full"),
    "single-pixel-input-same": _edge(3, 1, 2, "same", stride=2),
    "N1-C1": _edge(2, 6, 3, "same", N=1, C_in=1, C_out=1),
    "many-channels": _edge(1, 7, 3, N=1, C_in=32, C_out=24, groups=8),
    "prime-lengths": _edge(2, (13, 11), (5, 7), "full"),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
@pytest.mark.parametrize("c", list(EDGES.values()), ids=list(EDGES))
def test_edge_geometries(c, dtype, algorithm):
    rng = np.random.default_rng(77)
    x = random_array(rng, (c["N"], c["C_in"]) + c["spatial"], dtype)
    w = random_array(rng, (c["C_out"], c["C_in"] // c["groups"]) + c["kernel"], dtype)
    b = random_array(rng, (c["C_out"],), dtype) if c["bias"] else None
    dy = random_array(rng, (c["N"], c["C_out"]) + c["out"], dtype)
    y = fftconv.forward(x, w, b, algorithm=algorithm, **_kwargs(c))
    grads = fftconv.backward(dy, x, w, algorithm=algorithm, **_kwargs(c))
    _check(c, dtype, y, grads, oracle.oracle_forward(x, w, b, **_kwargs(c)),
           oracle.oracle_backward(dy, x, w, **_kwargs(c)))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("fn", ["forward", "backward", "plan"])
@pytest.mark.parametrize("n,k,kw", [
    (3, 4, dict()),
    (4, 2, dict(dilation=4)),
    (2, 3, dict(padding=[(0, 0)])),
])
def test_empty_output_is_an_error(n, k, kw, fn, algorithm):
    """CONVENTIONS section 2: out < 1 is an error, not an empty array."""
    x, w = np.ones((1, 1, n)), np.ones((1, 1, k))
    with pytest.raises(ValueError, match=r"is larger than the padded input \(\d+,\), which leaves no output"):
        if fn == "forward":
            fftconv.forward(x, w, algorithm=algorithm, **kw)
        elif fn == "backward":
            fftconv.backward(np.ones((1, 1, 1)), x, w, algorithm=algorithm, **kw)
        else:
            fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm=algorithm, **kw)
