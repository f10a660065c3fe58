"""The public surface: typed, explicit keywords with one set of defaults across every
entry point; Conv1d/2d/3d; the engine cache's settings; py.typed."""
import configparser
import dataclasses
import inspect
import pathlib
import typing

import numpy as np
import pytest

import fftconv
from fftconv import checks, config, planner
from fftconv.checks import ALGORITHM, DEFAULTS, LAYER_DEFAULTS, LayerKeywords

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYER = tuple(LAYER_DEFAULTS)
EXECUTION = ("max_workspace_bytes", "measure")


def _params(f):
    return inspect.signature(f).parameters


def _core_entry_points():
    return {"fftconv.forward": fftconv.forward, "fftconv.backward": fftconv.backward,
            "fftconv.vjp": fftconv.vjp, "fftconv.plan": fftconv.plan}


def _all_entry_points():
    """Every function or constructor that takes the layer keywords."""
    points = dict(_core_entry_points())
    points.update({f"fftconv.{c.__name__}": c for c in
                   (fftconv.Conv, fftconv.Conv1d, fftconv.Conv2d, fftconv.Conv3d)})
    try:
        import fftconv.torch as ft
        points.update({"fftconv.torch.conv": ft.conv, "fftconv.torch.native_conv": ft.native_conv})
    except ImportError:
        pass
    try:
        import fftconv.dask as fd
        points.update({"fftconv.dask.forward": fd.forward, "fftconv.dask.backward": fd.backward,
                       "fftconv.dask.vjp": fd.vjp})
    except ImportError:
        pass
    return points


# -- one set of keywords and defaults ------------------------------------------------------------
def test_the_defaults_are_written_once():
    assert LAYER_DEFAULTS == dict(padding="valid", stride=1, dilation=1, groups=1,
                                  flip_kernel=False, transposed=False, output_padding=0,
                                  padding_mode="zeros", layout="channels_first")
    assert LAYER_DEFAULTS == DEFAULTS.as_dict() and ALGORITHM == "auto"
    hints = typing.get_type_hints(LayerKeywords)
    assert hints["padding"] == checks.Padding and hints["layout"] == checks.Layout


@pytest.mark.parametrize("name, f", list(_all_entry_points().items()))
def test_every_entry_point_has_the_layer_keywords_with_the_shared_defaults(name, f):
    params = _params(f)
    reference = _params(fftconv.forward)
    for key in LAYER:
        assert key in params, f"{name} lacks {key}"
        p = params[key]
        assert p.kind is p.KEYWORD_ONLY, f"{name}: {key} is not keyword-only"
        assert p.default == LAYER_DEFAULTS[key], f"{name}: {key}={p.default!r}"
        assert p.annotation == reference[key].annotation, f"{name}: {key}'s type"
    if name != "fftconv.torch.native_conv":   # native_conv is one algorithm
        assert params["algorithm"].default == ALGORITHM
        assert params["algorithm"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("name, f", [(n, f) for n, f in _all_entry_points().items()
                                     if n.startswith(("fftconv.dask", "fftconv.forward",
                                                      "fftconv.backward", "fftconv.vjp",
                                                      "fftconv.plan"))])
def test_the_execution_keywords_agree(name, f):
    for key in EXECUTION:
        p = _params(f)[key]
        assert p.kind is p.KEYWORD_ONLY and p.default is None, name
        assert p.annotation == _params(fftconv.plan)[key].annotation, name


def test_signatures_are_visible_and_typed():
    params = _params(fftconv.forward)
    assert list(params)[:3] == ["x", "w", "b"]
    assert list(params)[3:] == list(LAYER) + ["algorithm"] + list(EXECUTION)
    assert params["padding"].annotation == "Padding"
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())
    plan = _params(fftconv.plan)
    assert plan["dtype"].default is inspect.Parameter.empty
    assert plan["tile"].default is None
    assert inspect.signature(fftconv.backward).return_annotation == "Gradients"
    assert fftconv.forward.__wrapped__.__name__ == "forward"
    assert "padding : " in fftconv.forward.__doc__ and "measure : " in fftconv.forward.__doc__


@pytest.mark.parametrize("name", ["forward", "backward", "vjp"])
def test_an_unknown_keyword_names_the_function(name):
    x, w = np.ones((1, 1, 8)), np.ones((1, 1, 3))
    args = (np.ones((1, 1, 6)), x, w) if name == "backward" else (x, w)
    with pytest.raises(TypeError, match=rf"^fftconv\.{name}: got unexpected keyword argument\(s\) "
                                        rf"pad; its keywords are padding, stride, .*, layout, "
                                        rf"algorithm, max_workspace_bytes, measure$"):
        getattr(fftconv, name)(*args, pad=1)


def test_positional_layer_keywords_are_refused():
    with pytest.raises(TypeError, match=r"forward\(\) takes from 2 to 3 positional arguments"):
        fftconv.forward(np.ones((1, 1, 8)), np.ones((1, 1, 3)), None, "same")


def test_execution_keywords_on_the_stateless_functions():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 2, 32)), rng.standard_normal((3, 2, 5))
    ref = fftconv.forward(x, w, padding="same")
    small = fftconv.forward(x, w, padding="same", algorithm="fft", max_workspace_bytes=20_000)
    np.testing.assert_allclose(small, ref, atol=1e-12)
    g = fftconv.backward(np.ones_like(ref), x, w, padding="same", max_workspace_bytes=20_000)
    assert g.dx.shape == x.shape
    y, pullback = fftconv.vjp(x, w, padding="same", measure=False)
    np.testing.assert_allclose(y, ref, atol=1e-12)
    with pytest.raises(ValueError, match=r"fftconv\.forward: max_workspace_bytes must be None or an "
                                         r"int >= 1, got max_workspace_bytes=0"):
        fftconv.forward(x, w, max_workspace_bytes=0)
    with pytest.raises(TypeError, match=r"fftconv\.vjp: measure must be a bool, got measure='yes'"):
        fftconv.vjp(x, w, measure="yes")


# -- Conv1d/2d/3d, kernel_size, dtype --------------------------------------------------------------
@pytest.mark.parametrize("cls, nd", [(fftconv.Conv1d, 1), (fftconv.Conv2d, 2), (fftconv.Conv3d, 3)])
def test_an_int_kernel_size_with_the_rank_known(cls, nd):
    conv = cls(2, 3, 3, padding="same", rng=0)
    assert conv.kernel_size == (3,) * nd and conv.w.shape == (3, 2) + (3,) * nd
    same = fftconv.Conv(2, 3, (3,) * nd, padding="same", rng=0)
    np.testing.assert_array_equal(conv.w, same.w)
    x = np.ones((1, 2) + (5,) * nd, np.float32)
    np.testing.assert_array_equal(conv(x), same(x))
    assert repr(conv).startswith(f"Conv{nd}d(2, 3, kernel_size={(3,) * nd}")
    assert isinstance(conv, fftconv.Conv) and set(_params(cls)) == set(_params(fftconv.Conv))


@pytest.mark.parametrize("cls", [fftconv.Conv, fftconv.Conv1d, fftconv.Conv2d, fftconv.Conv3d])
def test_conv_takes_like_as_plan_does(cls):
    """``like=`` (issue 19): keyword-only, default numpy, the last parameter, as
    ``fftconv.plan``'s; ``dtype`` and ``rng`` keep their defaults."""
    params = _params(cls)
    like, plan_like = params["like"], _params(fftconv.plan)["like"]
    assert like.kind is like.KEYWORD_ONLY and like.default is None
    assert plan_like.kind is plan_like.KEYWORD_ONLY and plan_like.default is None
    assert list(params)[-3:] == ["dtype", "rng", "like"]
    assert params["dtype"].default is np.float32 and params["rng"].default is None
    assert "like : array, optional" in fftconv.Conv.__doc__
    conv = cls(2, 3, (3,) * (cls.spatial_dims or 2), rng=0)
    assert conv.arrays.key == fftconv.backends.host().key and type(conv.w) is np.ndarray


def test_kernel_size_errors():
    with pytest.raises(TypeError, match=r"^fftconv\.Conv: kernel_size=3 is one int, which does not "
                                        r"say how many spatial axes the layer has; give one entry per "
                                        r"axis \(e\.g\. \(3, 3\) for 2-D\) or use fftconv\.Conv1d, "
                                        r"Conv2d or Conv3d$"):
        fftconv.Conv(3, 4, 3)
    with pytest.raises(ValueError, match=r"^fftconv\.Conv2d: kernel_size must have one entry per "
                                         r"spatial axis \(2\), got 3 in kernel_size=\(3, 3, 3\)$"):
        fftconv.Conv2d(3, 4, (3, 3, 3))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv: kernel_size must be an int or a sequence "
                                        r"of ints, one per spatial axis, got kernel_size=3\.0$"):
        fftconv.Conv(3, 4, 3.0)
    with pytest.raises(ValueError, match=r"^fftconv\.Conv3d: kernel_size must be >= 1 on every axis"):
        fftconv.Conv3d(3, 4, 0)


@pytest.mark.parametrize("dtype, shown", [(int, "int64"), (np.int32, "int32"), (bool, "bool")])
def test_a_non_float_dtype_is_a_clear_error(dtype, shown):
    with pytest.raises(TypeError, match=rf"^fftconv\.Conv: dtype must be a float or complex dtype "
                                        rf"\(float16, float32, float64, complex64, complex128\): the "
                                        rf"layer's weights are trained by gradients, got "
                                        rf"dtype={shown}$"):
        fftconv.Conv(3, 6, (3, 3), dtype=dtype)


def test_other_dtype_errors():
    with pytest.raises(TypeError, match=r"^fftconv\.Conv2d: dtype must be a numpy dtype, got "
                                        r"dtype=None$"):
        fftconv.Conv2d(3, 6, 3, dtype=None)
    with pytest.raises(TypeError, match=r"fftconv\.Conv: dtype must be a float or complex dtype "
                                        r"\(.*\): .*, got dtype=<U3$"):
        fftconv.Conv(3, 6, (3, 3), dtype="U3")
    with pytest.raises(TypeError, match=r"fftconv\.Conv: dtype has extended precision"):
        fftconv.Conv(3, 6, (3, 3), dtype=np.longdouble)
    for dtype in (np.float16, np.float64, np.complex64):
        conv = fftconv.Conv1d(2, 2, 3, dtype=dtype, rng=0)
        y = conv(np.ones((1, 2, 8), dtype))
        conv.backward(np.ones_like(y))
        assert conv.dw.dtype == dtype and bool(np.any(conv.dw))


def test_conv_takes_layout_and_flip_kernel():
    rng = np.random.default_rng(1)
    conv = fftconv.Conv2d(4, 6, 3, padding=1, stride=2, layout="channels_last", flip_kernel=True,
                          dtype=np.float64, rng=0)
    assert conv.w.shape == (3, 3, 4, 6)
    x = rng.standard_normal((2, 9, 8, 4))
    y = conv(x)
    ref = fftconv.forward(x, conv.w, conv.b, padding=1, stride=2, layout="channels_last",
                          flip_kernel=True)
    np.testing.assert_allclose(y, ref, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = conv.backward(dy)
    g = fftconv.backward(dy, x, conv.w, padding=1, stride=2, layout="channels_last",
                         flip_kernel=True)
    np.testing.assert_allclose(dx, g.dx, atol=1e-12)
    np.testing.assert_allclose(conv.dw, g.dw, atol=1e-12)
    assert repr(conv).endswith("flip_kernel=True, layout='channels_last', dtype=float64, "
                               "algorithm='auto: fft')") or "layout='channels_last'" in repr(conv)
    with pytest.raises(ValueError, match=r"^fftconv\.Conv2d: x must have shape \(N, \*spatial, 4\) "
                                         r"with 2 spatial axes, got x\.shape=\(2, 4, 9, 8\)$"):
        conv(np.ones((2, 4, 9, 8)))
    with pytest.raises(ValueError, match=r"fftconv\.Conv: layout must be one of"):
        fftconv.Conv(2, 2, (3,), layout="nhwc")


def test_conv_default_padding_is_valid():
    conv = fftconv.Conv1d(1, 1, 3)
    assert conv.layer["padding"] == "valid"
    assert conv(np.ones((1, 1, 8), np.float32)).shape == (1, 1, 6)
    assert "padding" not in repr(conv)


# -- Optional gradients ----------------------------------------------------------------------------
def test_gradients_are_optional_where_none_is_possible():
    hints = typing.get_type_hints(fftconv.Gradients)
    assert hints == dict(dx=typing.Optional[np.ndarray], dw=typing.Optional[np.ndarray],
                         db=np.ndarray)
    x, w = np.ones((1, 1, 8)), np.ones((1, 1, 3))
    y, pullback = fftconv.vjp(x, w)
    g = pullback(np.ones_like(y), need_dx=False)
    assert g.dx is None and g.dw is not None and g.db is not None
    g = pullback(np.ones_like(y), need_dw=False)
    assert g.dx is not None and g.dw is None and g.db is not None
    conv = fftconv.Conv1d(1, 1, 3, rng=0)
    out = conv(np.ones((1, 1, 8), np.float32))
    assert conv.backward(np.ones_like(out), need_dx=False) is None
    assert conv.dw.any()


# -- the engine cache's settings -------------------------------------------------------------------
@pytest.fixture
def restore_settings():
    before = fftconv.configure()
    yield
    fftconv.configure(**dataclasses.asdict(before))


def test_engine_cache_bounds_are_settings(restore_settings):
    s = fftconv.get_settings()
    assert (s.engine_cache_bytes, s.engine_cache_entries) == (1 << 30, 16) or "FFTCONV_ENGINE_CACHE_BYTES" in __import__("os").environ
    fftconv.configure(engine_cache_entries=1, engine_cache_bytes=10**8)
    assert planner.ENGINE_CACHE.max_entries == 1 and planner.ENGINE_CACHE.max_bytes == 10**8
    fftconv.clear_caches()
    for n in (8, 9, 10):
        fftconv.forward(np.ones((1, 1, n)), np.ones((1, 1, 3)), algorithm="fft")
    assert len(planner.ENGINE_CACHE) == 1
    fftconv.clear_caches()
    assert len(planner.ENGINE_CACHE) == 0


def test_engine_cache_settings_do_not_change_cache_keys():
    s = fftconv.get_settings()
    other = dataclasses.replace(s, engine_cache_bytes=1, engine_cache_entries=1)
    assert other == s and hash(other) == hash(s)


def test_engine_cache_settings_are_process_wide_only():
    with pytest.raises(TypeError, match=r"^fftconv\.using: engine_cache_bytes is process-wide \(it "
                                        r"bounds a cache every thread shares\); set it with "
                                        r"fftconv\.configure$"):
        with fftconv.using(engine_cache_bytes=10):
            pass
    with pytest.raises(TypeError, match=r"fftconv\.using: engine_cache_entries is process-wide"):
        with fftconv.using(engine_cache_entries=2, threads=1):
            pass


@pytest.mark.parametrize("changes, kind, match", [
    (dict(engine_cache_bytes=0), ValueError,
     r"^fftconv\.configure: engine_cache_bytes must be an int >= 1, got engine_cache_bytes=0$"),
    (dict(engine_cache_entries=1.5), TypeError,
     r"^fftconv\.configure: engine_cache_entries must be an int >= 1, got "
     r"engine_cache_entries=1\.5$"),
])
def test_bad_engine_cache_settings(changes, kind, match):
    before = fftconv.get_settings()
    with pytest.raises(kind, match=match):
        fftconv.configure(**changes)
    assert fftconv.get_settings() is before


def test_engine_cache_environment_variables():
    s = config._from_environment({"FFTCONV_ENGINE_CACHE_BYTES": "1e8",
                                  "FFTCONV_ENGINE_CACHE_ENTRIES": " 4 "})
    assert (s.engine_cache_bytes, s.engine_cache_entries) == (10**8, 4)


@pytest.mark.parametrize("variable, value, name, rule", [
    ("FFTCONV_ENGINE_CACHE_BYTES", "lots", "engine_cache_bytes", r"an int >= 1 \(bytes\)"),
    ("FFTCONV_ENGINE_CACHE_BYTES", "0", "engine_cache_bytes", r"an int >= 1 \(bytes\)"),
    ("FFTCONV_ENGINE_CACHE_ENTRIES", "1.5", "engine_cache_entries", r"an int >= 1"),
])
def test_a_bad_engine_cache_variable_warns_and_falls_back(variable, value, name, rule):
    with pytest.warns(config.SettingsWarning,
                      match=rf"^fftconv: ignoring {variable}={value!r} \({name} must be {rule}\); "
                            rf"using the default {name}=\d+$") as caught:
        s = config._from_environment({variable: value})
    assert len(caught) == 1
    assert getattr(s, name) == getattr(config.Settings(**config._defaults()), name)


def test_internals_are_not_exported():
    for name in ("direct", "REGISTRY", "ENGINE_CACHE"):
        assert not hasattr(fftconv, name) or name not in fftconv.__all__
    assert {"Conv1d", "Conv2d", "Conv3d", "clear_caches"} <= set(fftconv.__all__)
    assert all(hasattr(fftconv, name) for name in fftconv.__all__)


# -- py.typed ------------------------------------------------------------------------------------
def test_py_typed_is_shipped():
    assert (ROOT / "fftconv" / "py.typed").is_file()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options.package_data"]["fftconv"].split() == ["py.typed"]


# -- fftconv.torch: the same keywords, the same meaning ------------------------------------------
TORCH_LAYERS = [dict(flip_kernel=True, padding="same"),
                dict(layout="channels_last", padding=1, stride=2),
                dict(transposed=True, flip_kernel=True, stride=2, padding=1, output_padding=1),
                dict(transposed=True, layout="channels_last", flip_kernel=True, padding="same",
                     stride=2),
                dict(flip_kernel=True, padding=((1, 0), (2, 1)), padding_mode="reflect")]


@pytest.mark.parametrize("layer", TORCH_LAYERS)
@pytest.mark.parametrize("algorithm", ["native", "fft"])
def test_torch_conv_takes_flip_kernel_and_layout(layer, algorithm):
    torch = pytest.importorskip("torch")
    import fftconv.torch as ft
    rng = np.random.default_rng(0)
    last, transposed = layer.get("layout") == "channels_last", layer.get("transposed", False)
    x = rng.standard_normal((2, 9, 8, 4) if last else (2, 4, 9, 8))
    w_shape = {(False, False): (6, 4, 3, 3), (True, False): (3, 3, 4, 6),
               (False, True): (4, 3, 3, 3), (True, True): (3, 3, 3, 4)}[last, transposed]
    w = rng.standard_normal(w_shape)
    y_ref = fftconv.forward(x, w, **layer)
    g = fftconv.backward(np.ones_like(y_ref), x, w, **layer)
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = ft.conv(xt, wt, algorithm=algorithm, **layer)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), y_ref, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), g.dx, atol=1e-12)
    np.testing.assert_allclose(wt.grad.numpy(), g.dw, atol=1e-12)


def test_torch_conv_default_padding_is_valid_and_unknown_keywords_are_named():
    torch = pytest.importorskip("torch")
    import fftconv.torch as ft
    assert ft.conv(torch.ones(1, 1, 8), torch.ones(1, 1, 3)).shape == (1, 1, 6)
    with pytest.raises(TypeError, match=r"^fftconv\.torch\.conv: got unexpected keyword "
                                        r"argument\(s\) pad; its keywords are padding, .*, layout, "
                                        r"algorithm$"):
        ft.conv(torch.ones(1, 1, 8), torch.ones(1, 1, 3), pad=1)
    with pytest.raises(TypeError, match=r"^fftconv\.torch\.native_conv: got unexpected keyword "
                                        r"argument\(s\) algorithm; its keywords are padding, .*, "
                                        r"layout$"):
        ft.native_conv(torch.ones(1, 1, 8), torch.ones(1, 1, 3), algorithm="fft")


def test_torch_modules_share_the_defaults():
    torch = pytest.importorskip("torch")
    import fftconv.torch as ft
    for cls in (ft.FFTConv1d, ft.FFTConv2d, ft.FFTConv3d, ft.FFTConvTranspose1d,
                ft.FFTConvTranspose2d, ft.FFTConvTranspose3d):
        params = _params(cls)
        base = _params(ft.modules.TORCH_OF[cls])
        assert list(params)[:-1] == list(base), cls   # PyTorch's constructor ...
        assert params["algorithm"].kind is inspect.Parameter.KEYWORD_ONLY   # ... plus algorithm
        assert params["algorithm"].default == ALGORITHM
        for key in ("stride", "dilation", "groups", "padding_mode", "output_padding"):
            if key in params:
                assert params[key].default == LAYER_DEFAULTS[key] == base[key].default, (cls, key)
        # PyTorch's padding=0 is the shared "valid" in PyTorch's spelling
        assert params["padding"].default == 0
    assert checks.check_padding("f", 0, 2) == 0
    geometry = [fftconv.plan((1, 2, 8, 8), (3, 2, 3, 3), dtype=np.float32, padding=p).layer.padding
                for p in (0, "valid")]
    assert geometry[0] == geometry[1]
    m = ft.FFTConv2d(2, 3, 3, algorithm="fft")
    assert m.algorithm == "fft" and m(torch.ones(1, 2, 8, 8)).shape == (1, 3, 6, 6)


# -- fftconv.dask: the same keywords ---------------------------------------------------------------
def test_dask_takes_measure_and_flip_kernel():
    da = pytest.importorskip("dask.array")
    import fftconv.dask as fd
    rng = np.random.default_rng(2)
    x_np, w = rng.standard_normal((1, 2, 20)), rng.standard_normal((3, 2, 4))
    x = da.from_array(x_np, chunks=(1, 2, 7))
    y = fd.forward(x, w, padding="same", flip_kernel=True, measure=False, max_workspace_bytes=10**6)
    ref = fftconv.forward(x_np, w, padding="same", flip_kernel=True)
    np.testing.assert_allclose(y.compute(), ref, atol=1e-12)
    y, pullback = fd.vjp(x, w, padding="same", flip_kernel=True, measure=False)
    dx, dw, db = pullback(da.ones_like(y))
    g = fftconv.backward(np.ones_like(ref), x_np, w, padding="same", flip_kernel=True)
    np.testing.assert_allclose(dx.compute(), g.dx, atol=1e-12)
    np.testing.assert_allclose(dw, g.dw, atol=1e-12)
    with pytest.raises(TypeError, match=r"^fftconv\.dask\.backward: measure must be a bool, got "
                                        r"measure=1$"):
        fd.backward(y, x, w, padding="same", measure=1)
    with pytest.raises(ValueError, match=r"^fftconv\.dask\.forward: transposed=True is not "
                                         r"supported on Dask arrays; use the matching "
                                         r"convolution's input gradient"):
        fd.forward(x, rng.standard_normal((2, 3, 4)), transposed=True)
    with pytest.raises(TypeError, match=r"^fftconv\.dask\.vjp: got unexpected keyword argument\(s\) "
                                        r"tile; its keywords are padding, .*, measure$"):
        fd.vjp(x, w, tile=(4,))
