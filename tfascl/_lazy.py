"""Imports deferred until a name is used (PEP 562), so that ``import tfascl`` and the
commands' flag parsing do not start TensorFlow.

Plain Python: nothing here imports TensorFlow.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for names imported on first use.

    Args:
        package: the package's ``__name__``.
        namespace: its ``globals()``: a name, once imported, is kept there (so the next
            use is a plain attribute, and assigning one, as a test's monkeypatch does, wins).
        exports: name -> the module it comes from, relative to ``package`` (".stream");
            a name that maps to itself ("stream": ".stream") is a submodule.

    Returns:
        ``(__getattr__, __dir__)`` to bind in the package.
    """

    def getattr_(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(where, package)
        value = module if where.rsplit(".", 1)[-1] == name else getattr(module, name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_


class LazyModule(types.ModuleType):
    """A stand-in for a module, imported when one of its attributes is first read:
    ``tf = LazyModule("tensorflow")`` then ``tf.io.gfile`` imports TensorFlow there."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_module"] = None

    def _load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is None:
            module = importlib.import_module(self.__name__)
            self.__dict__["_lazy_module"] = module
        return module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)
