"""Backends: one module per inference server, found by the registry here.

Every module of this package other than the contract (``base``, ``launch``,
``profile``, ``settings``) is a backend module: it defines ``BACKEND`` (or
``BACKENDS``, a tuple) as a ``BackendSpec``.  The registry imports each such module
on first use, so adding a server is one new file here (docs/backends.md):

    get_backend("vllm")          # by name or alias, else a one-line UserError
    all_backends()               # every BackendSpec, by name
    get_profile("tgi")           # its launch profile (servers that infermeter can start)
    profiles()                   # every launch profile, by name
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from infermeter.backends.base import BackendSpec, protocol_for
from infermeter.backends.profile import Profile
from infermeter.errors import FieldError, UserError

__all__ = ["BackendSpec", "Profile", "all_backends", "get_backend", "get_profile", "profiles", "protocol_for",
           "reload"]

CONTRACT_MODULES = frozenset({"base", "launch", "profile", "settings"})


class _Registry:
    def __init__(self) -> None:
        self.specs: dict[str, BackendSpec] = {}
        self.names: dict[str, str] = {}  # name or alias (lower case) -> name
        self.profiles: dict[str, Profile] = {}
        self.profile_names: dict[str, str] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name in CONTRACT_MODULES or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            specs = getattr(module, "BACKENDS", None) or (getattr(module, "BACKEND", None),)
            for spec in specs:
                if not isinstance(spec, BackendSpec):
                    raise TypeError(f"{module.__name__} must define BACKEND = BackendSpec(...) "
                                    f"(or BACKENDS = (BackendSpec(...), ...))")
                self._add(spec, module.__name__)

    def _add(self, spec: BackendSpec, where: str) -> None:
        for key in (spec.name, *spec.aliases):
            key = key.lower()
            if key in self.names:
                raise ValueError(f"{where}: backend name {key!r} is already taken by {self.names[key]!r}")
            self.names[key] = spec.name
        self.specs[spec.name] = spec
        if spec.launch is not None:
            profile = _profile_of(spec)
            self.profiles[spec.name] = profile
            for key in (spec.name, *profile.aliases):
                self.profile_names.setdefault(key.lower(), spec.name)


_PROFILES: dict[int, tuple[BackendSpec, Profile]] = {}  # one Profile per spec, kept across reload()


def _profile_of(spec: BackendSpec) -> Profile:
    if id(spec) not in _PROFILES:
        _PROFILES[id(spec)] = (spec, Profile(spec))
    return _PROFILES[id(spec)][1]


@functools.cache
def _registry() -> _Registry:
    return _Registry()


def reload() -> None:
    """Forget the discovered modules (after a module was added to the package's path)."""
    _registry.cache_clear()


def all_backends() -> dict[str, BackendSpec]:
    """Every backend, by name (sorted)."""
    return dict(_registry().specs)


def find_backend(name: str | None) -> BackendSpec | None:
    """The backend named ``name`` (or one of its aliases, any case); None when unknown."""
    if not name:
        return None
    reg = _registry()
    key = reg.names.get(name.strip().lower())
    return reg.specs[key] if key else None


def get_backend(name: str) -> BackendSpec:
    """The backend named ``name`` (or an alias); a one-line ``UserError`` when unknown."""
    spec = find_backend(name)
    if spec is None:
        raise FieldError("target.backend", name, "{target.backend} {value!r} is not known", "use one of: {known}",
                         known=", ".join(all_backends()))
    return spec


def profiles() -> dict[str, Profile]:
    """Every launch profile (backends infermeter can start), by name."""
    return dict(_registry().profiles)


def get_profile(name: str) -> Profile:
    """The launch profile named ``name`` (or an alias); a one-line ``UserError`` when unknown."""
    reg = _registry()
    key = reg.profile_names.get(name.strip().lower())
    if key is None:
        raise UserError(f"server profile {name!r} is not known", f"use one of: {', '.join(reg.profiles)}")
    return reg.profiles[key]
