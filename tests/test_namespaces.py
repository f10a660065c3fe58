"""The layer sweep under two more array namespaces: PyTorch CPU tensors and
``array_api_strict`` (issue 19, "CI runs the code CuPy runs").

Operands are built with numpy (seeded), converted (``torch.from_numpy`` /
``array_api_strict.asarray``) and run through ``forward``, ``backward``, two
``vjp`` calls whose pullbacks are called in reverse order, and a plan made with
``like=`` the input.  Every result must be of the input's kind, on the input's
device, in the dtype numpy's call returns (float32 in, float32 out; float16 in,
float16 out; integers in, float64 out), and match both the numpy call and the
float64 oracle (``tests/oracle.py``) to CONVENTIONS §4's bounds, relative to
the largest magnitude.

``array_api_strict`` runs on its default device and, for a subset, on its
second device (``Device("device1")``), which numpy cannot read from: a call
that converted an operand to numpy on the way fails there, and a result left on
the wrong device is seen.  ``algorithm="direct"`` needs strided views, which
the standard does not have: on ``array_api_strict`` it is a clear error and
``"auto"`` does not choose it.

The sweep crosses every layer keyword: padding ``"valid"``, ``"same"``,
``"full"``, ``"causal"``, an int, one int per axis and ``(lo, hi)`` pairs (the
bare 1-D pair too); ``padding_mode`` zeros, reflect, replicate and circular;
stride, dilation, groups (depthwise too), ``transposed`` with
``output_padding``, ``layout="channels_last"``, bias and ``flip_kernel``; 1-5
spatial axes; float64, float32, complex128 and complex64.
"""
import functools
import warnings

import numpy as np
import pytest

import fftconv
import oracle
from conftest import TOL, random_array, rel_err

# float16 is computed in float32 and rounded to float16 (CONVENTIONS §4): the float32
# bound plus float16's rounding of the output, 2**-11 of the largest magnitude.
TOLERANCE = dict(TOL)
TOLERANCE[np.dtype(np.float16)] = 1e-5 + 2.0 ** -11


# ---------------------------------------------------------------------------------------------
# the namespaces
# ---------------------------------------------------------------------------------------------

class Namespace:
    """One array library (and device) the sweep runs under."""

    name = "numpy"
    strided = True                    # has strided views: "direct" is available

    def asarray(self, a):
        return np.array(a, copy=True)

    def to_numpy(self, a):
        return np.asarray(a)

    def native_dtype(self, dtype):
        return np.dtype(dtype)

    def is_kind(self, a) -> bool:
        return type(a) is np.ndarray

    def device_of(self, a):
        return "cpu"

    def check(self, got, like, dtype, what):
        """``got`` is of ``like``'s kind, on its device, of numpy dtype ``dtype``."""
        assert self.is_kind(got), f"{what}: {type(got).__module__}.{type(got).__name__} " \
                                  f"returned for {self.name} input"
        assert self.device_of(got) == self.device_of(like), \
            f"{what}: on {self.device_of(got)}, the input is on {self.device_of(like)}"
        assert got.dtype == self.native_dtype(dtype), \
            f"{what}: dtype {got.dtype}, expected {self.native_dtype(dtype)}"


class TorchNamespace(Namespace):
    name = "torch"

    def __init__(self):
        self.torch = pytest.importorskip("torch")

    def asarray(self, a):
        return self.torch.from_numpy(np.array(a, copy=True, order="C"))

    def to_numpy(self, a):
        return a.detach().cpu().numpy().copy()

    def native_dtype(self, dtype):
        return getattr(self.torch, np.dtype(dtype).name)

    def is_kind(self, a) -> bool:
        # a plain tensor: not a Parameter, not a subclass, not part of a graph
        return type(a) is self.torch.Tensor and not a.requires_grad

    def device_of(self, a):
        return a.device


class StrictNamespace(Namespace):
    strided = False

    def __init__(self, device=None):
        self.xp = pytest.importorskip("array_api_strict")
        self.device = self.xp.Device(device or "CPU_DEVICE")
        self.name = "array_api_strict" + ("" if device is None else f"-{device}")
        self.cpu = self.xp.Device("CPU_DEVICE")
        self.array_type = type(self.xp.asarray(0.0))

    def asarray(self, a):
        return self.xp.asarray(np.array(a, copy=True), device=self.device)

    def to_numpy(self, a):
        return np.array(np.from_dlpack(a.to_device(self.cpu)), copy=True)

    def native_dtype(self, dtype):
        return getattr(self.xp, np.dtype(dtype).name)

    def is_kind(self, a) -> bool:
        return type(a) is self.array_type

    def device_of(self, a):
        return a.device


_NAMESPACES = {"torch": TorchNamespace,
               "strict": StrictNamespace,
               "strict-device1": functools.partial(StrictNamespace, "device1")}


@functools.lru_cache(maxsize=None)
def _namespace_cached(name):
    return _NAMESPACES[name]()


def namespace(name):
    try:
        return _namespace_cached(name)
    except pytest.skip.Exception:
        raise
    except ImportError as error:  # pragma: no cover - importorskip turns these into skips
        pytest.skip(str(error))


# ---------------------------------------------------------------------------------------------
# the seeded sweep: every layer keyword
# ---------------------------------------------------------------------------------------------

CONV_PADDINGS = ("valid", "same", "full", "causal", "int", "ints", "pairs")
MODE_PADDINGS = ("same", "causal", "int", "ints", "pairs")
TRANSPOSED_PADDINGS = ("valid", "same", "full", "causal", "int", "ints", "pairs")
MODES = ("reflect", "replicate", "circular")


def _per_axis(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _axis_param(rng, nd, choices):
    if rng.random() < 0.4:
        return int(rng.choice(choices))
    return tuple(int(v) for v in rng.choice(choices, size=nd))


def _padding(rng, kind, nd):
    if kind in ("valid", "same", "full", "causal"):
        return kind
    if kind == "int":
        return int(rng.integers(0, 3))
    if kind == "ints":
        return [int(v) for v in rng.integers(0, 3, size=nd)]
    pairs = [(int(a), int(b)) for a, b in rng.integers(0, 3, size=(nd, 2))]
    if nd == 1 and rng.random() < 0.5:
        return pairs[0]                 # the bare 1-D pair (CONVENTIONS §2, issue 21)
    return pairs


def _explicit(padding, kernel, dilation, nd):
    """The oracle's form of ``padding``: ``"causal"`` as ``[(d*(k-1), 0)]`` per axis,
    the bare 1-D pair as a list of one pair."""
    if padding == "causal":
        return [(d * (k - 1), 0) for k, d in zip(kernel, _per_axis(dilation, nd))]
    if nd == 1 and isinstance(padding, tuple) and len(padding) == 2 and all(
            isinstance(p, int) for p in padding):
        return [padding]
    return padding


def _make(rng, idx, family, nd, pad_kind, layout, mode="zeros", dtype="float64"):
    """One random layer of ``family`` ("conv", "mode", "transposed") that PyTorch's rules
    allow and whose output is not empty."""
    small = nd >= 4
    while True:
        gkind = "one" if small and rng.random() < 0.5 else str(
            rng.choice(["one", "one", "few", "depthwise"]))
        if gkind == "one":
            groups, c_g, mult = 1, int(rng.integers(1, 4)), int(rng.integers(1, 3))
        elif gkind == "few":
            groups, c_g, mult = int(rng.integers(2, 4)), int(rng.integers(1, 3)), int(
                rng.integers(1, 3))
        else:
            groups, c_g, mult = int(rng.integers(2, 4)), 1, int(rng.integers(1, 3))
        if small:
            c_g, mult, groups = 1, 1, min(groups, 2)
        c_in, c_out = groups * c_g, groups * mult
        lo_n, hi_n = {1: (4, 14), 2: (3, 9), 3: (3, 6)}.get(nd, (2, 4))
        spatial = tuple(int(v) for v in rng.integers(lo_n, hi_n + 1, size=nd))
        kernel = tuple(int(v) for v in rng.integers(1, (4 if nd <= 2 else 3) + 1, size=nd))
        stride = _axis_param(rng, nd, [1, 1, 2, 3] if nd <= 3 else [1, 2])
        dilation = _axis_param(rng, nd, [1, 1, 2])
        flip = bool(rng.random() < 0.35)
        padding = _padding(rng, pad_kind, nd)
        kw = dict(padding=padding, stride=stride, dilation=dilation, groups=groups,
                  flip_kernel=flip)
        s, d = _per_axis(stride, nd), _per_axis(dilation, nd)
        ke = [dd * (k - 1) + 1 for k, dd in zip(kernel, d)]
        if family == "transposed":
            if padding in ("same", "causal"):
                ops = 0
                if padding == "causal":
                    ref_pad = [(0, max(e - ss, 0)) for e, ss in zip(ke, s)]
                    ref_ops = tuple(max(ss - e, 0) for e, ss in zip(ke, s))
                else:
                    ref_pad, ref_ops = padding, (0,) * nd
            else:
                ops = tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
                ref_pad, ref_ops = padding, ops
            kw.update(transposed=True, output_padding=ops)
            ref = dict(kw, padding=ref_pad, output_padding=ref_ops)
            del ref["transposed"]
            try:
                out = oracle.transposed_output_spatial(spatial, kernel, ref_pad, stride,
                                                       dilation, ref_ops, flip)
            except ValueError:
                continue
            w_shape = (c_in, c_out // groups) + kernel
        else:
            ref = dict(kw, padding=_explicit(padding, kernel, dilation, nd))
            if family == "mode":
                kw["padding_mode"] = ref["padding_mode"] = mode
            try:
                pads = oracle.resolve_padding(ref["padding"], spatial, kernel, stride, dilation,
                                              flip)
                out = oracle.output_spatial(spatial, kernel, ref["padding"], stride, dilation,
                                            flip)
            except ValueError:
                continue
            if mode == "reflect" and not all(p < n for pair, n in zip(pads, spatial)
                                             for p in pair):
                continue
            if mode in ("replicate", "circular") and not all(
                    p <= n for pair, n in zip(pads, spatial) for p in pair):
                continue
            w_shape = (c_out, c_in // groups) + kernel
        if min(out) < 1:
            continue
        return dict(idx=idx, family=family, nd=nd, pad_kind=pad_kind, layout=layout,
                    mode=kw.get("padding_mode", "zeros"), dtype=dtype, kw=kw, ref=ref,
                    bias=bool(rng.random() < 0.6), groups=groups,
                    x_shape=(int(rng.integers(1, 3)), c_in) + spatial, w_shape=w_shape,
                    c_out=c_out, out=tuple(out))


def _build(seed=1919):
    rng = np.random.default_rng(seed)
    configs = []
    dtypes = ("float64", "float32")
    layouts = ("channels_first", "channels_last")

    def add(*args, **kwargs):
        configs.append(_make(rng, len(configs), *args, **kwargs))

    for nd in (1, 2, 3):
        for i, kind in enumerate(CONV_PADDINGS):
            add("conv", nd, kind, layouts[(i + nd) % 2], dtype=dtypes[i % 2])
    for nd in (1, 2, 3):
        for i, mode in enumerate(MODES):
            kind = MODE_PADDINGS[(3 * nd + i) % len(MODE_PADDINGS)]
            add("mode", nd, kind, layouts[(i + nd + 1) % 2], mode=mode, dtype=dtypes[(i + nd) % 2])
    for nd in (1, 2):
        for i, kind in enumerate(TRANSPOSED_PADDINGS):
            add("transposed", nd, kind, layouts[(i + nd) % 2], dtype=dtypes[(i + 1) % 2])
    add("transposed", 3, "same", "channels_first", dtype="float32")
    add("transposed", 3, "pairs", "channels_last")
    for nd in (4, 5):       # more spatial axes than torch or cuDNN offer
        add("conv", nd, "same", "channels_first")
        add("mode", nd, "int", "channels_last", mode="circular", dtype="float32")
        add("transposed", nd, "ints", "channels_first", dtype="float32")
    for i, (family, nd, kind, mode) in enumerate([("conv", 1, "same", "zeros"),
                                                  ("conv", 2, "pairs", "zeros"),
                                                  ("mode", 2, "same", "reflect"),
                                                  ("transposed", 1, "int", "zeros"),
                                                  ("conv", 3, "causal", "zeros")]):
        add(family, nd, kind, layouts[i % 2], mode=mode,
            dtype=("complex128", "complex64")[i % 2])
    return configs


CONFIGS = _build()


def _config_id(c):
    layout = "cl" if c["layout"] == "channels_last" else "cf"
    mode = "" if c["mode"] == "zeros" else f"-{c['mode']}"
    return f"c{c['idx']}-{c['family']}{mode}-{c['nd']}d-{c['pad_kind']}-{layout}-{c['dtype']}"


@functools.lru_cache(maxsize=None)
def _case(idx, dtype=None):
    """numpy operands in the config's layout (``x2``: the same shape, other values)
    and the oracle's ``y`` and gradients in that layout; ``dtype``: another than the
    config's (``tests/test_gpu.py`` runs the real configs in float32 and float64)."""
    c = CONFIGS[idx]
    dtype = dtype or c["dtype"]
    rng = np.random.default_rng(300 + idx)
    x = random_array(rng, c["x_shape"], dtype)
    w = random_array(rng, c["w_shape"], dtype)
    b = random_array(rng, (c["c_out"],), dtype) if c["bias"] else None
    dy = random_array(rng, (c["x_shape"][0], c["c_out"]) + c["out"], dtype)
    x2 = random_array(rng, c["x_shape"], dtype)
    y_ref, g_ref = _reference(c, x, w, b, dy)
    if c["layout"] == "channels_last":
        x, x2, dy = (oracle.to_channels_last(a) for a in (x, x2, dy))
        w = oracle.weights_to_channels_last(w)
    return x, w, b, dy, x2, y_ref, g_ref


def _reference(c, x, w, b, dy):
    """The oracle's ``y`` and gradients for channels-first operands, in ``c``'s layout."""
    if c["family"] == "transposed":
        y_ref = oracle.oracle_transposed_forward(x, w, b, **c["ref"])
        g_ref = oracle.oracle_transposed_backward(dy, x, w, **c["ref"])
    else:
        y_ref = oracle.oracle_forward(x, w, b, **c["ref"])
        g_ref = oracle.oracle_backward(dy, x, w, **c["ref"])
    if c["layout"] == "channels_last":
        y_ref = oracle.to_channels_last(y_ref)
        g_ref = oracle.Grads(oracle.to_channels_last(g_ref.dx),
                             oracle.weights_to_channels_last(g_ref.dw), g_ref.db)
    return y_ref, g_ref


@functools.lru_cache(maxsize=None)
def _oracle(idx, dtype=None, second=False):
    """The oracle's ``y`` and gradients of ``x2`` (``second``) or ``x``."""
    c = CONFIGS[idx]
    x, w, b, dy, x2, y_ref, g_ref = _case(idx, dtype)
    if not second:
        return y_ref, g_ref
    if c["layout"] == "channels_last":
        x2, dy = oracle.from_channels_last(x2), oracle.from_channels_last(dy)
        w = oracle.weights_from_channels_last(w)
    return _reference(c, x2, w, b, dy)


def _keywords(c, algorithm):
    return dict(c["kw"], layout=c["layout"], algorithm=algorithm)


@functools.lru_cache(maxsize=None)
def _numpy_results(idx, algorithm, dtype=None):
    """The same calls on the numpy arrays: ``y`` and the gradients, of ``x`` and ``x2``
    (on one thread: FFTW's threads only cost time on arrays this small)."""
    c = CONFIGS[idx]
    x, w, b, dy, x2, _, _ = _case(idx, dtype)
    kw = _keywords(c, algorithm)
    with fftconv.using(threads=1):
        return (fftconv.forward(x, w, b, **kw), tuple(fftconv.backward(dy, x, w, **kw)),
                fftconv.forward(x2, w, b, **kw), tuple(fftconv.backward(dy, x2, w, **kw)))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """PyTorch's own intra-op threads on one thread while this module runs (its CPU
    FFTs of these tiny arrays are ~8x slower on two threads of a shared machine);
    fftconv's own ``threads`` setting is left as it is."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def assert_close(got, ref, dtype, what, factor=1):
    """``max|got - ref| <= factor * tol * max|ref|`` (CONVENTIONS §4), ``got`` finite."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = rel_err(got, ref)
    tol = factor * TOLERANCE[np.dtype(dtype)]
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e} ({np.dtype(dtype)})"


NAMES = ("dx", "dw", "db")


def _check_grads(ns, grads, like, dtype, refs, what):
    assert isinstance(grads, fftconv.Gradients), f"{what}: {type(grads).__name__}"
    assert len(grads) == 3 and grads.dx is grads[0] and grads.db is grads[2]
    for got, kind_like, name, ref in zip(grads, like, NAMES, refs):
        ns.check(got, kind_like, dtype, f"{what} {name}")
        for want, against in ref:
            assert_close(ns.to_numpy(got), want, dtype, f"{what} {name} ({against})")


def _run_case(ns, c, algorithm, dtype=None):
    """forward, backward, two vjp calls (pullbacks in reverse order, twice) and a plan
    with ``like=`` on ``ns``'s arrays, against the oracle and the numpy call."""
    x_np, w_np, b_np, dy_np, x2_np, y_ref, g_ref = _case(c["idx"], dtype)
    y2_ref, g2_ref = _oracle(c["idx"], dtype, second=True)
    y_np, g_np, y2_np, g2_np = _numpy_results(c["idx"], algorithm, dtype)
    want = np.dtype(dtype or c["dtype"])
    dtype = y_np.dtype
    assert dtype == want
    x, w, dy, x2 = (ns.asarray(a) for a in (x_np, w_np, dy_np, x2_np))
    b = None if b_np is None else ns.asarray(b_np)
    kw = _keywords(c, algorithm)
    like = (x, w, w if b is None else b)

    def refs_y(ref_oracle, ref_numpy):
        return [(ref_oracle, "oracle"), (ref_numpy, "numpy")]

    def refs_g(g_oracle, g_numpy):
        return [[(o, "oracle"), (n, "numpy")] for o, n in zip(g_oracle, g_numpy)]


    def check_y(y, ref_oracle, ref_numpy, what):
        ns.check(y, x, dtype, what)
        for want, against in refs_y(ref_oracle, ref_numpy):
            assert_close(ns.to_numpy(y), want, dtype, f"{what} ({against})")

    # the stateless functions
    y = fftconv.forward(x, w, b, **kw)
    check_y(y, y_ref, y_np, "forward y")
    grads = fftconv.backward(dy, x, w, **kw)
    _check_grads(ns, grads, like, dtype, refs_g(g_ref, g_np), "backward")

    # two vjp calls; their pullbacks called in reverse order, each twice
    y1, pullback1 = fftconv.vjp(x, w, b, **kw)
    y2, pullback2 = fftconv.vjp(x2, w, b, **kw)
    check_y(y1, y_ref, y_np, "vjp y")
    check_y(y2, y2_ref, y2_np, "vjp y (x2)")
    for _ in range(2):
        _check_grads(ns, pullback2(dy), like, dtype, refs_g(g2_ref, g2_np), "pullback (x2)")
        _check_grads(ns, pullback1(dy), like, dtype, refs_g(g_ref, g_np), "pullback")

    # a plan on the input's library and device
    p = fftconv.plan(x_np.shape, w_np.shape, dtype=dtype, like=x, **kw)
    _check_plan_backend(p, x)
    y0 = p.forward(x2, w, b)                     # other data first: backward is the last's
    check_y(y0, y2_ref, y2_np, "plan forward (x2)")
    y = p.forward(x, w, b)
    check_y(y, y_ref, y_np, "plan forward")
    _check_grads(ns, p.backward(dy), like, dtype, refs_g(g_ref, g_np), "plan backward")
    yv, pullback = p.vjp(x, w, b)
    yv2, pullback_2 = p.vjp(x2, w, b)
    check_y(yv, y_ref, y_np, "plan vjp y")
    _check_grads(ns, pullback_2(dy), like, dtype, refs_g(g2_ref, g2_np), "plan pullback (x2)")
    _check_grads(ns, pullback(dy), like, dtype, refs_g(g_ref, g_np), "plan pullback")


def _check_plan_backend(p, like):
    from fftconv import backends
    assert isinstance(p.arrays, backends.Arrays), type(p.arrays)
    assert p.arrays.key == backends.arrays_of(like).key, (p.arrays, backends.arrays_of(like))


def _sweep_params():
    params = []
    for c in CONFIGS:
        for algorithm in ("fft", "overlap_add", "direct"):
            params.append(pytest.param("torch", c, algorithm,
                                       id=f"torch-{_config_id(c)}-{algorithm}"))
        for algorithm in ("fft", "overlap_add"):
            params.append(pytest.param("strict", c, algorithm,
                                       id=f"strict-{_config_id(c)}-{algorithm}"))
    for c in CONFIGS[::4]:
        params.append(pytest.param("strict-device1", c, "fft",
                                   id=f"strict-device1-{_config_id(c)}-fft"))
    return params


@pytest.mark.parametrize("ns_name, c, algorithm", _sweep_params())
def test_sweep(ns_name, c, algorithm):
    _run_case(namespace(ns_name), c, algorithm)


@pytest.mark.parametrize("ns_name", ["torch", "strict"])
@pytest.mark.parametrize("c", [pytest.param(c, id=_config_id(c)) for c in CONFIGS[1::6]])
def test_sweep_auto(ns_name, c):
    """``"auto"`` on the namespace: a result equal to the oracle (on ``array_api_strict``
    a choice other than ``"direct"``)."""
    ns = namespace(ns_name)
    x_np, w_np, b_np, dy_np, _, y_ref, g_ref = _case(c["idx"])
    x, w, dy = (ns.asarray(a) for a in (x_np, w_np, dy_np))
    b = None if b_np is None else ns.asarray(b_np)
    kw = _keywords(c, "auto")
    dtype = np.dtype(c["dtype"])
    y, pullback = fftconv.vjp(x, w, b, **kw)
    ns.check(y, x, dtype, "auto y")
    assert_close(ns.to_numpy(y), y_ref, dtype, "auto y")
    for got, ref, name in zip(pullback(dy), g_ref, NAMES):
        ns.check(got, x, dtype, f"auto {name}")
        assert_close(ns.to_numpy(got), ref, dtype, f"auto {name}")
    p = fftconv.plan(x_np.shape, w_np.shape, dtype=dtype, like=x, **kw)
    if not ns.strided:
        assert p.algorithm != "direct"
    assert_close(ns.to_numpy(p.forward(x, w, b)), y_ref, dtype, "auto plan y")


def test_sweep_covers_every_keyword():
    """The sweep crosses what the module docstring says (guards the generator)."""
    seen = lambda key: {c[key] for c in CONFIGS}  # noqa: E731
    assert seen("nd") == {1, 2, 3, 4, 5}
    assert seen("family") == {"conv", "mode", "transposed"}
    assert seen("layout") == {"channels_first", "channels_last"}
    assert seen("mode") == {"zeros", "reflect", "replicate", "circular"}
    assert seen("dtype") == {"float64", "float32", "complex128", "complex64"}
    for family, kinds in (("conv", CONV_PADDINGS), ("transposed", TRANSPOSED_PADDINGS),
                          ("mode", MODE_PADDINGS)):
        assert {c["pad_kind"] for c in CONFIGS if c["family"] == family} == set(kinds), family
    for mode in MODES:
        assert {c["layout"] for c in CONFIGS if c["mode"] == mode} == {"channels_first",
                                                                        "channels_last"}
    kws = [c["kw"] for c in CONFIGS]
    assert any(c["nd"] == 1 and isinstance(c["kw"]["padding"], tuple) for c in CONFIGS)
    assert any(max(_per_axis(k["stride"], c["nd"])) > 1 for k, c in zip(kws, CONFIGS))
    assert any(max(_per_axis(k["dilation"], c["nd"])) > 1 for k, c in zip(kws, CONFIGS))
    assert any(k["groups"] > 1 and c["x_shape"][1] == k["groups"]
               for k, c in zip(kws, CONFIGS))                                   # depthwise
    assert any(1 < k["groups"] < c["x_shape"][1] for k, c in zip(kws, CONFIGS))
    assert any(k.get("transposed") and max(_per_axis(k["output_padding"], c["nd"])) > 0
               for k, c in zip(kws, CONFIGS))
    assert any(c["family"] == "transposed" and c["layout"] == "channels_last"
               for c in CONFIGS)
    assert any(k["flip_kernel"] for k in kws) and not all(k["flip_kernel"] for k in kws)
    assert any(c["bias"] for c in CONFIGS) and not all(c["bias"] for c in CONFIGS)
    assert any(c["x_shape"][0] > 1 for c in CONFIGS)
    assert any(k["padding"] == "same" and max(_per_axis(k["stride"], c["nd"])) > 1
               for k, c in zip(kws, CONFIGS))


# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------

DTYPE_CASES = [
    # x dtype, w dtype, b dtype, result dtype
    ("float32", "float32", "float32", "float32"),
    ("float16", "float16", "float16", "float16"),
    ("int64", "int64", "int64", "float64"),
    ("int32", "int32", None, "float64"),
    ("float32", "float64", "float32", "float64"),
    ("complex64", "complex64", None, "complex64"),
]


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add", "direct"])
@pytest.mark.parametrize("ns_name", ["torch", "strict"])
@pytest.mark.parametrize("x_dt, w_dt, b_dt, result", DTYPE_CASES,
                         ids=[f"{a}-{b}-{c}" for a, b, c, _ in DTYPE_CASES])
def test_dtypes_map_back(ns_name, x_dt, w_dt, b_dt, result, algorithm):
    """float32 in, float32 out; float16 in, float16 out (computed in float32); integers
    in, float64 out; mixed real dtypes promote as numpy does; as the numpy call."""
    ns = namespace(ns_name)
    if algorithm == "direct" and not ns.strided:
        pytest.skip("direct needs strided views")
    if ns_name == "strict" and "float16" in (x_dt, w_dt):
        pytest.skip("the array API standard has no float16")
    rng = np.random.default_rng(11)
    kw = dict(padding="same", stride=(1, 2), groups=2, algorithm=algorithm)

    def draw(shape, dt):
        if np.dtype(dt).kind in "iu":
            return rng.integers(-4, 5, size=shape).astype(dt)
        return random_array(rng, shape, dt)

    x_np, w_np = draw((2, 4, 9, 8), x_dt), draw((6, 2, 3, 4), w_dt)
    b_np = None if b_dt is None else draw((6,), b_dt)
    layer = {k: v for k, v in kw.items() if k != "algorithm"}
    y_ref = oracle.oracle_forward(x_np, w_np, b_np, **layer)
    dy_np = draw(y_ref.shape, result)
    g_ref = oracle.oracle_backward(dy_np, x_np, w_np, **layer)
    y_np = fftconv.forward(x_np, w_np, b_np, **kw)
    assert y_np.dtype == np.dtype(result)      # numpy's own rule, the one to follow
    x, w, dy = ns.asarray(x_np), ns.asarray(w_np), ns.asarray(dy_np)
    b = None if b_np is None else ns.asarray(b_np)
    y = fftconv.forward(x, w, b, **kw)
    ns.check(y, x, result, "y")
    assert_close(ns.to_numpy(y), y_ref, result, "y (oracle)")
    # two results each within the bound of the oracle are within twice it of each other
    assert_close(ns.to_numpy(y), y_np, result, "y (numpy)", factor=2)
    grads = fftconv.backward(dy, x, w, **kw)
    g_np = fftconv.backward(dy_np, x_np, w_np, **kw)
    for got, want, ref, name in zip(grads, g_np, g_ref, NAMES):
        assert want.dtype == np.dtype(result)
        ns.check(got, x, result, name)
        assert_close(ns.to_numpy(got), ref, result, f"{name} (oracle)")
    p = fftconv.plan(x_np.shape, w_np.shape, dtype=np.result_type(x_np, w_np), like=x, **kw)
    ns.check(p.forward(x, w, b), x, result, "plan y")


# ---------------------------------------------------------------------------------------------
# kinds: mixed operands, plans bound to a kind, tensors that require grad
# ---------------------------------------------------------------------------------------------

def _small(ns=None, dtype=np.float64):
    rng = np.random.default_rng(5)
    x, w, b = (random_array(rng, s, dtype) for s in ((2, 3, 10), (4, 3, 3), (4,)))
    dy = random_array(rng, (2, 4, 8), dtype)
    if ns is None:
        return x, w, b, dy
    return tuple(ns.asarray(a) for a in (x, w, b, dy))


def test_mixed_kinds_are_a_type_error_naming_both():
    torch_ns, strict = namespace("torch"), namespace("strict")
    x, w, b, dy = _small()
    xt, wt, bt, dyt = _small(torch_ns)
    xs, ws, bs, dys = _small(strict)
    both = r"(?=.*numpy)(?=.*torch)"
    with pytest.raises(TypeError, match=both + r".*\bw\b") as info:
        fftconv.forward(x, wt)
    assert "x" in str(info.value)
    with pytest.raises(TypeError, match=both):
        fftconv.forward(xt, w, bt)
    with pytest.raises(TypeError, match=both):
        fftconv.forward(xt, wt, b)
    with pytest.raises(TypeError, match=both):
        fftconv.backward(dy, xt, wt)
    with pytest.raises(TypeError, match=both):
        fftconv.vjp(x, wt)
    with pytest.raises(TypeError, match=r"(?=.*torch)(?=.*array_api_strict)"):
        fftconv.forward(xt, ws)
    y, pullback = fftconv.vjp(xt, wt, bt)
    with pytest.raises(TypeError, match=both):
        pullback(dy)                                    # a numpy dy for a torch pullback


def test_operands_on_two_devices_are_a_type_error():
    strict, other = namespace("strict"), namespace("strict-device1")
    x, w, _, _ = _small(strict)
    _, w1, _, _ = _small(other)
    with pytest.raises(TypeError, match=r"(?=.*CPU_DEVICE)(?=.*device1)"):
        fftconv.forward(x, w1)


def test_a_plan_runs_on_its_like_kind_only():
    torch_ns, strict = namespace("torch"), namespace("strict")
    x, w, b, dy = _small()
    xt, wt, bt, dyt = _small(torch_ns)
    xs, ws, bs, dys = _small(strict)
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, like=xt, algorithm="fft")
    _check_plan_backend(p, xt)
    both = r"(?=.*numpy)(?=.*torch)"
    with pytest.raises(TypeError, match=both):
        p.forward(x, w, b)
    with pytest.raises(TypeError, match=both):
        p.vjp(x, w)
    with pytest.raises(TypeError, match=r"(?=.*torch)(?=.*array_api_strict)"):
        p.forward(xs, ws)
    torch_ns.check(p.forward(xt, wt, bt), xt, np.float64, "y")
    with pytest.raises(TypeError, match=both):
        p.backward(dy)                                  # numpy dy after a torch forward
    q = fftconv.plan(x.shape, w.shape, dtype=np.float64, like=xs, algorithm="fft")
    _check_plan_backend(q, xs)
    with pytest.raises(TypeError, match=r"(?=.*torch)(?=.*array_api_strict)"):
        q.forward(xt, wt)
    with pytest.raises(TypeError, match=r"like"):
        fftconv.plan(x.shape, w.shape, dtype=np.float64, like=[1.0, 2.0])


def test_plan_without_like_is_numpy():
    x, w, b, _ = _small()
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64)
    _check_plan_backend(p, x)
    assert type(p.forward(x, w, b)) is np.ndarray


def test_tensors_that_require_grad_are_refused():
    """``fftconv.torch`` is the entry point for those; the message says so."""
    ns = namespace("torch")
    xt, wt, bt, dyt = _small(ns)
    graded = lambda t: t.detach().clone().requires_grad_(True)  # noqa: E731
    for args in ((graded(xt), wt), (xt, graded(wt), bt), (xt, wt, graded(bt))):
        with pytest.raises(TypeError, match=r"fftconv\.torch"):
            fftconv.forward(*args)
    with pytest.raises(TypeError, match=r"fftconv\.torch"):
        fftconv.backward(graded(dyt), xt, wt)
    p = fftconv.plan(xt.shape, wt.shape, dtype=np.float64, like=xt)
    with pytest.raises(TypeError, match=r"fftconv\.torch"):
        p.forward(xt, ns.torch.nn.Parameter(wt.clone()))


def test_strict_direct_is_a_clear_error():
    """``"direct"`` needs strided views: on ``array_api_strict`` asking for it says so,
    on every entry point, before any work."""
    ns = namespace("strict")
    x, w, b, dy = _small(ns)
    message = r"direct"
    for call in (lambda: fftconv.forward(x, w, b, algorithm="direct"),
                 lambda: fftconv.backward(dy, x, w, algorithm="direct"),
                 lambda: fftconv.vjp(x, w, algorithm="direct"),
                 lambda: fftconv.plan(x.shape, w.shape, dtype=np.float64, like=x,
                                      algorithm="direct")):
        with pytest.raises((ValueError, TypeError), match=message) as info:
            call()
        assert "array_api_strict" in str(info.value) or "strided" in str(info.value), \
            str(info.value)
    # auto never chooses it there, even where it would on numpy (a tiny layer)
    p_np = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="auto")
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, like=x, algorithm="auto")
    assert p.algorithm != "direct", (p.algorithm, p_np.algorithm)
    ns.check(fftconv.forward(x, w, b, algorithm="auto"), x, np.float64, "auto y")


# ---------------------------------------------------------------------------------------------
# non-finite values, in-place changes, strided inputs
# ---------------------------------------------------------------------------------------------

def _algorithms(ns):
    return ("fft", "overlap_add", "direct") if ns.strided else ("fft", "overlap_add")


@pytest.mark.parametrize("ns_name", ["torch", "strict"])
def test_non_finite_values_spread_as_on_numpy(ns_name):
    """A NaN and an Inf in one sample: the same outputs are non-finite as on numpy
    (CONVENTIONS §5: never into another sample), the finite ones agree."""
    ns = namespace(ns_name)
    rng = np.random.default_rng(8)
    x_np = rng.standard_normal((3, 2, 40))
    w_np = rng.standard_normal((3, 2, 5))
    x_np[0, 1, 7] = np.nan
    x_np[0, 0, 30] = np.inf
    x_np[2, 1, 3] = -np.inf
    dy_np = rng.standard_normal((3, 3, 40))
    dy_np[1, 2, 20] = np.nan
    x, w, dy = ns.asarray(x_np), ns.asarray(w_np), ns.asarray(dy_np)
    for algorithm in _algorithms(ns):
        kw = dict(padding="same", algorithm=algorithm)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pairs = [(fftconv.forward(x, w, **kw), fftconv.forward(x_np, w_np, **kw), "y")]
            pairs += [(g, g_np, f"backward {name}") for g, g_np, name in
                      zip(fftconv.backward(dy, x, w, **kw),
                          fftconv.backward(dy_np, x_np, w_np, **kw), NAMES)]
        if ns.name == "torch":   # CONVENTIONS §5: no RuntimeWarning (the standard has no
            # errstate: array_api_strict's numpy may warn inside its own functions)
            assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], \
                [str(w.message) for w in caught]
        for got, want, what in pairs:
            what = f"{algorithm} {what}"
            ns.check(got, x, np.float64, what)
            got = ns.to_numpy(got)
            for test in (np.isnan, np.isposinf, np.isneginf):
                assert np.array_equal(test(got), test(want)), f"{what}: {test.__name__} differs"
            finite = np.isfinite(want)
            if finite.any():
                assert_close(got[finite], want[finite], np.float64, what)
        y = ns.to_numpy(fftconv.forward(x, w, **kw))
        assert np.isfinite(y[1]).all(), f"{algorithm}: a NaN reached another sample"


@pytest.mark.parametrize("ns_name", ["torch", "strict"])
def test_pullback_after_in_place_changes(ns_name):
    """A pullback gives the gradients for ``x`` and ``w`` as they were at the vjp call,
    after both are overwritten in place (CONVENTIONS §3)."""
    ns = namespace(ns_name)
    c = next(c for c in CONFIGS if c["family"] == "conv" and c["dtype"] == "float64"
             and c["nd"] == 2)
    x_np, w_np, b_np, dy_np, _, y_ref, g_ref = _case(c["idx"])
    for algorithm in _algorithms(ns):
        kw = _keywords(c, algorithm)
        x, w, dy = ns.asarray(x_np), ns.asarray(w_np), ns.asarray(dy_np)
        b = None if b_np is None else ns.asarray(b_np)
        _, pullback = fftconv.vjp(x, w, b, **kw)
        p = fftconv.plan(x_np.shape, w_np.shape, dtype=np.float64, like=x, **kw)
        _, plan_pullback = p.vjp(x, w, b)
        x[...] = 3.0
        w[...] = -1.0
        for pb, what in ((pullback, "vjp"), (plan_pullback, "plan vjp")):
            for got, ref, name in zip(pb(dy), g_ref, NAMES):
                assert_close(ns.to_numpy(got), ref, np.float64, f"{algorithm} {what} {name}")
        # and the next call sees the new values (the weight spectrum is not stale)
        y = fftconv.forward(x, w, **kw)
        want = fftconv.forward(np.full_like(x_np, 3.0), np.full_like(w_np, -1.0),
                               **dict(kw, algorithm="direct"))
        assert_close(ns.to_numpy(y), want, np.float64, f"{algorithm} y after the change")
        y = p.forward(x, w)
        assert_close(ns.to_numpy(y), want, np.float64, f"{algorithm} plan y after the change")


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add", "direct"])
def test_torch_views_with_any_strides(algorithm):
    """Non-contiguous tensors (a permuted channels-last buffer, a stepped slice) give
    the contiguous tensors' results; the operands are not changed."""
    ns = namespace("torch")
    torch = ns.torch
    rng = np.random.default_rng(9)
    x_np = rng.standard_normal((2, 3, 11, 12))
    w_np = rng.standard_normal((4, 3, 3, 2))
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_np, 1, -1))).permute(0, 3, 1, 2)
    w = torch.from_numpy(np.stack([w_np, -w_np], 1).reshape((8,) + w_np.shape[1:]))[::2]
    assert np.array_equal(w.numpy(), w_np)
    assert not x.is_contiguous() and not w.is_contiguous()
    kw = dict(padding="same", stride=(2, 1), algorithm=algorithm)
    y = fftconv.forward(x, w, **kw)
    ns.check(y, x, np.float64, "y")
    ref = oracle.oracle_forward(x_np, w_np, padding="same", stride=(2, 1))
    assert_close(ns.to_numpy(y), ref, np.float64, "y")
    dy_np = rng.standard_normal(ref.shape)
    dy = torch.from_numpy(np.ascontiguousarray(np.moveaxis(dy_np, 1, -1))).permute(0, 3, 1, 2)
    g_ref = oracle.oracle_backward(dy_np, x_np, w_np, padding="same", stride=(2, 1))
    for got, want, name in zip(fftconv.backward(dy, x, w, **kw), g_ref, NAMES):
        ns.check(got, x, np.float64, name)
        assert_close(ns.to_numpy(got), want, np.float64, name)
    assert np.array_equal(x.numpy(), x_np) and np.array_equal(w.numpy(), w_np)
