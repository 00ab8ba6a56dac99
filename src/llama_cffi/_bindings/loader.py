"""Loading ggml's backend modules in a ``GGML_BACKEND_DL`` build (the portable
profile): the best CPU variant for this machine, the other backend modules
next to the libraries, and GPU backend plugins installed as Python packages.

In a normal (native) build every backend is linked in and nothing here runs.

The CPU backend of a portable build is compiled once per CPU level
(``libggml-cpu-<level>.so``: x64, haswell, zen4, sapphirerapids ...). Each
module exports ``ggml_backend_score``, computed by feature-detection code
built without the level's instruction set: 0 when this CPU lacks something
the level needs, higher for better levels. The highest-scoring module is
loaded, unless ``LLAMA_CFFI_CPU_VARIANT=<level>`` names one; an unknown level,
or one this CPU cannot run, is an error rather than a crash.

GPU backends come as plugins: a Python package registered under the entry
point group ``llama_cffi.backends`` (name: the backend, e.g. ``cuda``; value:
an importable module). The module is imported (so that it can load the
libraries it depends on, such as NVIDIA's runtime wheels) and every
``libggml-*.so`` in its directory is loaded with ``ggml_backend_load``. A
plugin that cannot be imported or loaded gives a warning naming it and the
reason (the dynamic loader's ``dlerror`` for a library that does not load);
the other backends still work. A plugin that loads but finds no device is
reported with its device count (0); ``objects.system.check_gpu_offload``
turns ``n_gpu_layers`` without a device into an error naming it. A build
without ``GGML_BACKEND_DL`` cannot load plugins: :func:`ignored_plugins`
warns once naming the installed ones.

Not for use from several threads: :func:`load_backends` runs once, under
``init.ensure_initialised``'s lock.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import re
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import LlamaError
from .raw import NULL, ffi, lib

ENV_CPU_VARIANT = "LLAMA_CFFI_CPU_VARIANT"
"""Names the CPU variant to load instead of the best-scoring one (``haswell`` ...)."""
ENTRY_POINT_GROUP = "llama_cffi.backends"
"""Entry point group of GPU backend plugins: name = backend, value = module."""

_MODULE_RE = re.compile(r"^(?:lib)?ggml-(?P<name>[A-Za-z0-9_.+-]+?)\.(?:so|dylib|dll)$")
_CORE = frozenset({"base"})  # libggml-base: linked, not a backend


class BackendLoadError(LlamaError):
    """A backend module could not be loaded, or the CPU variant asked for
    (``LLAMA_CFFI_CPU_VARIANT``) does not exist or cannot run on this CPU."""


@dataclass(frozen=True)
class CpuVariant:
    """One ``libggml-cpu-<level>`` module of the build and its score here
    (0: this CPU cannot run it)."""

    name: str
    path: str
    score: int


@dataclass(frozen=True)
class PluginReport:
    """What happened to one installed GPU plugin.

    name: its entry point name (``cuda``, ``vulkan``).
    module: the module the entry point names (``llama_cffi_cuda``).
    backends: (ggml backend name, devices it found) for each module loaded,
        e.g. ``(("CUDA", 0),)``: loaded, but no usable device.
    error: why it was not loaded (``""`` when it was).
    """

    name: str
    module: str
    backends: tuple[tuple[str, int], ...] = ()
    error: str = ""

    @property
    def loaded(self) -> bool:
        return not self.error

    @property
    def n_devices(self) -> int:
        return sum(n for _, n in self.backends)

    @property
    def outcome(self) -> str:
        """In words: ``loaded CUDA, 0 devices`` or ``not loaded: <reason>``."""
        if self.error:
            return f"not loaded: {self.error}"
        n = self.n_devices
        names = ", ".join(b for b, _ in self.backends)
        return f"loaded {names}, {n} device{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_backends` loaded and why.

    cpu_variant: the level loaded (``""`` when the build has no variants).
    cpu_reason: why that one, in words.
    cpu_variants: every variant of the build with its score on this CPU.
    modules: the other backend modules loaded from the package directory.
    plugins: what happened to each GPU plugin found.
    """

    cpu_variant: str
    cpu_reason: str
    cpu_variants: tuple[CpuVariant, ...]
    modules: tuple[str, ...]
    plugins: tuple[PluginReport, ...]


_report: LoadReport | None = None


def report() -> LoadReport | None:
    """The report of the one :func:`load_backends` call; None before it or in a
    build without loadable backends."""
    return _report


def backend_modules(directory: Path) -> dict[str, Path]:
    """The ggml backend modules in ``directory``: backend name -> file
    (``cpu-zen4`` -> ``libggml-cpu-zen4.so``)."""
    out: dict[str, Path] = {}
    if not directory.is_dir():
        return out
    for entry in sorted(directory.iterdir()):
        m = _MODULE_RE.match(entry.name)
        if m and m.group("name") not in _CORE and entry.is_file():
            out[m.group("name")] = entry
    return out


def variant_score(path: Path) -> int:
    """Call the module's exported ``ggml_backend_score`` (its feature check,
    which runs on any CPU of the architecture); 0 if it exports none."""
    mode = getattr(os, "RTLD_LOCAL", 0) | getattr(os, "RTLD_NOW", 0)
    try:
        dll = ctypes.CDLL(str(path), mode=mode)
    except OSError as exc:
        raise BackendLoadError(f"cannot open the CPU backend module {path}: {exc}") from exc
    try:
        fn = getattr(dll, "ggml_backend_score", None)
        if fn is None:
            return 0
        fn.restype = ctypes.c_int
        fn.argtypes = []
        return int(fn())
    finally:
        _dlclose(dll)


def _dlclose(dll: ctypes.CDLL) -> None:
    import _ctypes
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(dll._handle)


def cpu_variants(directory: Path) -> list[CpuVariant]:
    """The build's CPU variants with their scores on this CPU, best first."""
    found = []
    for name, path in backend_modules(directory).items():
        if name.startswith("cpu-"):
            found.append(CpuVariant(name[4:], str(path), variant_score(path)))
    return sorted(found, key=lambda v: v.score, reverse=True)


def choose_cpu_variant(variants: list[CpuVariant], forced: str | None) -> tuple[CpuVariant, str]:
    """The variant to load and why: the one ``forced`` names, else the best."""
    names = ", ".join(v.name for v in sorted(variants, key=lambda v: v.score))
    supported = [v for v in variants if v.score > 0]
    if forced:
        match = [v for v in variants if v.name == forced]
        if not match:
            raise BackendLoadError(
                f"{ENV_CPU_VARIANT}={forced}: this build has no CPU variant of that name "
                f"(it has: {names})")
        if match[0].score <= 0:
            raise BackendLoadError(
                f"{ENV_CPU_VARIANT}={forced}: this CPU cannot run the {forced} variant (it "
                f"lacks an instruction set the variant needs); this CPU supports: "
                f"{', '.join(v.name for v in supported) or 'none'}")
        return match[0], f"forced by {ENV_CPU_VARIANT}"
    if not supported:
        raise BackendLoadError(
            f"none of this build's CPU variants ({names}) can run on this CPU")
    n = len(supported)
    return supported[0], (f"highest-scoring of the {n} variant{'s' if n != 1 else ''} "
                          f"this CPU supports ({', '.join(v.name for v in supported)})")


def dlopen_error(path: Path) -> str:
    """Why ``path`` cannot be loaded, in the dynamic loader's words
    (``dlerror``: a missing library, an undefined symbol ...), found by
    opening it again; when it opens, what else makes ``ggml_backend_load``
    fail."""
    mode = getattr(os, "RTLD_LOCAL", 0) | getattr(os, "RTLD_NOW", 0)
    try:
        dll = ctypes.CDLL(str(path), mode=mode)
    except OSError as exc:
        return str(exc)
    try:
        if getattr(dll, "ggml_backend_init", None) is None:
            return "the library exports no ggml_backend_init (not a ggml backend module)"
        return ("the library opens, but its ggml_backend_init returned no backend (a "
                "ggml version other than the core's, or its own check failed)")
    finally:
        _dlclose(dll)


def _load(path: Path, what: str) -> tuple[str, int]:
    """``ggml_backend_load`` one module; its backend's name and device count."""
    reg = lib.ggml_backend_load(os.fsencode(path))
    if reg == NULL:
        raise BackendLoadError(f"could not load {what} from {path}: {dlopen_error(path)}")
    name = ffi.string(lib.ggml_backend_reg_name(reg)).decode(errors="replace")
    return name, int(lib.ggml_backend_reg_dev_count(reg))


def _entry_points() -> list[metadata.EntryPoint]:
    """The installed plugins' entry points, by name (a warning if the metadata
    of some distribution cannot be read)."""
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # broken metadata of an unrelated distribution
        warnings.warn(f"llama_cffi: could not list backend plugins: {exc}", RuntimeWarning,
                      stacklevel=4)
        return []
    return sorted(eps, key=lambda e: e.name)


def _plugins(seen: set[str]) -> list[PluginReport]:
    """Load every installed plugin's modules; what happened to each."""
    out: list[PluginReport] = []
    for ep in _entry_points():
        try:
            module = importlib.import_module(ep.value)
            where = Path(module.__file__ or "").resolve().parent
            mods = {n: p for n, p in backend_modules(where).items()
                    if not n.startswith("cpu") and n not in seen}
            if not mods:
                raise BackendLoadError(f"no libggml-*.so module in {where}")
            regs = []
            for name, path in mods.items():
                regs.append(_load(path, f"the {name} backend of plugin {ep.name!r}"))
                seen.add(name)
            out.append(PluginReport(ep.name, ep.value, tuple(regs)))
        except Exception as exc:  # any failure of a plugin is its own, reported
            warnings.warn(f"llama_cffi: backend plugin {ep.name!r} ({ep.value}) was not "
                          f"loaded: {exc}", RuntimeWarning, stacklevel=3)
            out.append(PluginReport(ep.name, ep.value, error=str(exc) or type(exc).__name__))
    return out


_ignored: tuple[str, ...] | None = None


def ignored_plugins() -> tuple[str, ...]:
    """In a build without ``GGML_BACKEND_DL`` (a source build: its backends
    are compiled in), the installed plugins, which it cannot load: warns once
    naming them (called by ``init.ensure_initialised``)."""
    global _ignored
    if _ignored is None:
        eps = _entry_points()
        _ignored = tuple(f"{ep.name} ({ep.value})" for ep in eps)
        if _ignored:
            warnings.warn(
                f"llama_cffi: backend plugin{'s' if len(_ignored) != 1 else ''} "
                f"{', '.join(_ignored)} installed but not used: this llama_cffi is a source "
                "build with its backends compiled in (rebuild it with the GPU backend, e.g. "
                "CMAKE_ARGS=-DGGML_CUDA=ON, or install the portable wheel)",
                RuntimeWarning, stacklevel=4)
    return _ignored


def load_backends(directory: Path, cpu_variant: str | None = None) -> LoadReport:
    """Load the CPU variant, the other backend modules of ``directory`` and the
    installed GPU plugins (once; called by ``init.ensure_initialised``).

    cpu_variant: the level to load; default: ``$LLAMA_CFFI_CPU_VARIANT``, else
        the highest-scoring one this CPU supports.
    """
    global _report
    forced = cpu_variant or os.environ.get(ENV_CPU_VARIANT) or None
    variants = cpu_variants(directory)
    modules = backend_modules(directory)
    chosen_name, reason = "", "this build has no CPU variants"
    if variants:
        chosen, reason = choose_cpu_variant(variants, forced)
        _load(Path(chosen.path), f"the CPU variant {chosen.name}")
        chosen_name = chosen.name
    elif "cpu" in modules:
        if forced:
            raise BackendLoadError(f"{ENV_CPU_VARIANT}={forced}: this build has one CPU "
                                   "backend, not variants")
        _load(modules["cpu"], "the CPU backend")
        chosen_name, reason = "cpu", "the only CPU backend of this build"
    seen = {"cpu"}
    loaded = []
    for name, path in modules.items():
        if name.startswith("cpu"):
            continue
        _load(path, f"the {name} backend")
        seen.add(name)
        loaded.append(name)
    plugins = _plugins(seen)
    _report = LoadReport(chosen_name, reason, tuple(variants), tuple(loaded), tuple(plugins))
    return _report


def describe(rep: LoadReport) -> str:
    """One line for ``system_info``: the variant and why."""
    if not rep.cpu_variant:
        return rep.cpu_reason
    return f"{rep.cpu_variant}: {rep.cpu_reason}"


__all__ = ["ENTRY_POINT_GROUP", "ENV_CPU_VARIANT", "BackendLoadError", "CpuVariant",
           "LoadReport", "PluginReport", "backend_modules", "choose_cpu_variant",
           "cpu_variants", "describe", "dlopen_error", "ignored_plugins", "load_backends",
           "report", "variant_score"]

