"""A griffe extension for the API reference: static analysis, with what only runs at import.

Static analysis keeps the annotations as written (``Padding``, ``ArrayLike``), which dynamic
analysis would expand, but it reads the source, and two things are only complete at import:

* docstrings that ``fftconv.api`` and ``fftconv.dask`` fill with shared text (the layer
  keywords, the output-size table) through ``str.format`` fields such as ``{params}``;
* defaults written as names (``padding=DEFAULTS.padding``), shown as their values.

For these, this extension takes the value from the imported object. It also shows Sphinx
cross-reference roles (``:func:`forward```), which Markdown does not know, as code.
"""
from __future__ import annotations

import importlib
import inspect
import re

import griffe

_FIELD = re.compile(r"\{[a-z_]+\}")
_NAME = re.compile(r"[A-Za-z_][\w.]*")
_ROLE = re.compile(r":(?:func|class|meth|data|attr|mod|exc|obj):`~?([^`]+)`")


def _clean(text: str) -> str:
    return _ROLE.sub(r"`\1`", text)


def _live(obj: griffe.Object):
    """The imported object ``obj`` documents, or ``None``."""
    try:
        live = importlib.import_module(obj.module.path)
        for part in obj.path[len(obj.module.path) + 1:].split("."):
            live = getattr(live, part)
    except (ImportError, AttributeError):
        return None
    return live


def _fill_docstring(obj: griffe.Object, live) -> None:
    if obj.docstring is not None and _FIELD.search(obj.docstring.value) and live.__doc__:
        obj.docstring.value = _clean(inspect.cleandoc(live.__doc__))


class RuntimeDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _clean(obj.docstring.value)

    def on_function_instance(self, *, func: griffe.Function, **kwargs) -> None:
        named = [p for p in func.parameters if p.default is not None
                 and _NAME.fullmatch(str(p.default)) and str(p.default) not in ("None", "True", "False")]
        needs_doc = func.docstring is not None and _FIELD.search(func.docstring.value)
        if not (named or needs_doc):
            return
        live = _live(func)
        if live is None:
            return
        _fill_docstring(func, live)
        try:
            signature = inspect.signature(live)
        except (TypeError, ValueError):
            return
        for parameter in named:
            if parameter.name in signature.parameters:
                parameter.default = repr(signature.parameters[parameter.name].default)

    def on_class_instance(self, *, cls: griffe.Class, **kwargs) -> None:
        if cls.docstring is not None and _FIELD.search(cls.docstring.value):
            live = _live(cls)
            if live is not None:
                _fill_docstring(cls, live)
