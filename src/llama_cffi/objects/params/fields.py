"""Fields of the parameter objects, and their command-line flags.

Each field of :mod:`~llama_cffi.objects.params`' classes is declared with
:func:`param`, which records the llama.cpp flags it corresponds to, its help
text and how its value is written on and read from a command line. The class
docstrings, the ``llama-cffi`` command's flags (:func:`add_flags`,
:func:`from_args`) and the reverse direction (:func:`to_flags`) are all
derived from that one declaration.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

# A value as it appears on a command line -> the field's value, and back.
Parse = Callable[[str], Any]
Format = Callable[[Any], str]


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one field appears on the command line."""

    flags: tuple[str, ...]
    help: str
    parse: Parse | None = None  # None: a switch (bool)
    format: Format = str
    repeat: bool = False  # the flag may be given several times; values join
    # (with ``repeat``, ``parse`` returns one item, or a tuple of items)
    negative: tuple[str, ...] = ()  # switches that set the field to False (``--no-kv-offload``)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


def param(default: Any, *flags: str, help: str, parse: Parse | None = None,
          format: Format = str, repeat: bool = False, negative: Sequence[str] = (),
          choices: Sequence[str] | None = None, metavar: str | None = None,
          factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its flags (``flags[0]`` is the one :func:`to_flags`
    writes) and help text (which names what it maps to in llama.cpp)."""
    meta = {"flag": Flag(tuple(flags), help, parse, format, repeat, tuple(negative),
                         tuple(choices) if choices else None, metavar)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field[Any]) -> Flag:
    flag = f.metadata.get("flag")
    if not isinstance(flag, Flag):
        raise TypeError(f"field {f.name} has no flag")
    return flag


def document(cls: type) -> type:
    """Append one line per field (flags and help) to the class docstring."""
    lines = [(cls.__doc__ or "").rstrip(), "", "Fields (llama.cpp flag in brackets):", ""]
    for f in dataclasses.fields(cls):
        flag = flag_of(f)
        names = ", ".join(flag.flags + flag.negative)
        lines.append(f"{f.name}: {flag.help} [``{names}``]")
    cls.__doc__ = "\n".join(lines) + "\n"
    return cls


# -- value conversions shared by several fields -------------------------------------------


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (on/off, true/false, 1/0), got {text!r}")


def parse_floats(text: str) -> tuple[float, ...]:
    """``"3,1"`` or ``"3/1"`` (llama.cpp's -ts) -> (3.0, 1.0)."""
    return tuple(float(x) for x in text.replace("/", ",").split(",") if x.strip())


def format_floats(values: Sequence[float]) -> str:
    return ",".join(repr(float(v)) for v in values)


def parse_names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def format_names(values: Sequence[str]) -> str:
    return ",".join(values)


# -- command line ---------------------------------------------------------------------------

_P = TypeVar("_P")


def add_flags(parser: argparse.ArgumentParser | Any, cls: type, *, prefix: str = "",
              skip: Sequence[str] = ()) -> None:
    """Add one option per field of ``cls`` to ``parser`` (or an argument group).

    Every option stores into ``<prefix><field name>`` with default None, so
    :func:`from_args` can tell what was given. ``skip`` leaves fields out.
    """
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = flag_of(f)
        dest = prefix + f.name
        kw: dict[str, Any] = {"dest": dest, "default": None, "help": flag.help}
        if flag.parse is None:
            kw["action"] = "store_const"
            kw["const"] = True
            if flag.negative:
                parser.add_argument(*flag.negative, dest=dest, action="store_const",
                                    const=False, default=None, help=argparse.SUPPRESS)
        else:
            kw["type"] = _checked(flag)
            if flag.repeat:
                kw["action"] = "append"
            if flag.choices:
                kw["metavar"] = "{" + ",".join(flag.choices) + "}"
            elif flag.metavar:
                kw["metavar"] = flag.metavar
        parser.add_argument(*flag.flags, **kw)


def _checked(flag: Flag) -> Parse:
    """``flag.parse`` with its errors in argparse's words (``invalid choice: ...``)."""
    parse = flag.parse
    assert parse is not None

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError) as exc:
            if flag.choices:
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {text!r} (choose from {', '.join(flag.choices)})") from None
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = flag.flags[-1].lstrip("-")
    return convert


def from_args(cls: type[_P], ns: argparse.Namespace, *, prefix: str = "",
              base: _P | None = None) -> _P:
    """The params object the parsed flags describe (fields not given keep
    ``base``'s values, or the defaults)."""
    given: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = getattr(ns, prefix + f.name, None)
        if value is None:
            continue
        flag = flag_of(f)
        if flag.repeat:
            merged: list[Any] = []
            for item in value:
                merged.extend(item if isinstance(item, (list, tuple)) else [item])
            value = tuple(merged)
        given[f.name] = value
    if base is not None:
        return dataclasses.replace(base, **given)  # type: ignore[type-var]
    return cls(**given)


def to_flags(params: object, *, only_changed: bool = True) -> list[str]:
    """The command line that :func:`from_args` turns back into ``params``."""
    out: list[str] = []
    defaults = type(params)()
    for f in dataclasses.fields(params):  # type: ignore[arg-type]
        value = getattr(params, f.name)
        if only_changed and value == getattr(defaults, f.name):
            continue
        if value is None:
            continue
        flag = flag_of(f)
        name = flag.flags[0]
        if flag.parse is None:
            if value:
                out.append(name)
            elif flag.negative:
                out.append(flag.negative[0])
            continue
        if flag.repeat:
            for item in value:
                out += [name, flag.format(item)]
        else:
            out += [name, flag.format(value)]
    return out
