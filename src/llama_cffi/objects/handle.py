"""Ownership of C pointers.

Every llama_cffi object that owns a C pointer derives from :class:`Handle`:

* it owns exactly one pointer and frees it exactly once, through ``close()``,
  the ``with`` statement, or (as a fallback when the user forgot) a
  :func:`weakref.finalize` that runs when the object is collected;
* a child keeps a strong reference to its parent (a Context holds its Model),
  so a parent is never freed while a child still needs it; a parent tracks
  its children only weakly and closes them first when it is closed
  explicitly, so ``model.close()`` never leaves a context pointing at freed
  memory;
* using an object after ``close()`` raises :class:`~llama_cffi.errors.ClosedError`
  instead of touching freed memory; facts read once at creation (listed in
  ``_FACTS``, plain attributes while open, so reading them costs what an
  attribute costs) raise it too;
* an object collected without ``close()`` emits a :class:`ResourceWarning`
  (as unclosed files and sockets do), then frees its pointer.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..errors import ClosedError

_H = TypeVar("_H", bound="Handle")


def _collected(name: str, free: Callable[..., Any], *args: Any) -> None:
    """Finalizer of an object that was never closed: warn, then free."""
    try:
        warnings.warn(f"unclosed {name}: call close() or use 'with'", ResourceWarning,
                      stacklevel=2)
    finally:
        free(*args)


class Handle:
    """Base class for objects owning one C pointer."""

    _ptr: Any = None  # None once closed (an identity test is the cheapest check)
    _finalizer: weakref.finalize[..., Any] | None = None
    _children: weakref.WeakSet[Handle] | None = None
    _FACTS: ClassVar[tuple[str, ...]] = ()  # instance attributes that vanish on close()

    def _own(self, ptr: Any, free: Callable[..., Any], *free_args: Any) -> None:
        """Take ownership of ``ptr``; ``free(ptr, *free_args)`` releases it."""
        self._ptr = ptr
        # The finalizer must not reference self, only what freeing needs.
        self._finalizer = weakref.finalize(self, _collected, type(self).__name__, free, ptr,
                                           *free_args)
        self._finalizer.atexit = False  # C libraries may already be torn down

    def _adopt(self, child: Handle) -> None:
        """Register ``child`` to be closed before this object is freed."""
        if self._children is None:
            self._children = weakref.WeakSet()
        self._children.add(child)

    @property
    def ptr(self) -> Any:
        """The raw C pointer; raises ClosedError after close()."""
        ptr = self._ptr
        if ptr is None:
            raise ClosedError(f"{type(self).__name__} is closed")
        return ptr

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Free the C object now (closing its children first). Idempotent."""
        children = self._children
        if children:
            for child in list(children):
                child.close()
        self._ptr = None
        for name in self._FACTS:
            self.__dict__.pop(name, None)
        finalizer = self._finalizer
        if finalizer is not None:
            self._finalizer = None
            info = finalizer.detach()  # None if the finalizer already ran
            if info is not None:
                _, _, args, _ = info
                free, rest = args[1], args[2:]
                free(*rest)

    def _release(self) -> Any:
        """Give up ownership without freeing (the pointer now belongs to C)."""
        ptr = self.ptr
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._ptr = None
        return ptr

    if not TYPE_CHECKING:  # keep static attribute checks for everything else
        def __getattr__(self, name: str) -> Any:
            # only reached when normal lookup fails: a fact of a closed object
            if name in type(self)._FACTS:
                raise ClosedError(f"{type(self).__name__} is closed")
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __enter__(self: _H) -> _H:
        self.ptr  # raise if closed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
