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
  instead of touching freed memory.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ClosedError

_H = TypeVar("_H", bound="Handle")


class Handle:
    """Base class for objects owning one C pointer."""

    _ptr: Any = None  # None once closed (an identity test is the cheapest check)
    _finalizer: weakref.finalize | None = None
    _children: weakref.WeakSet[Handle] | None = None

    def _own(self, ptr: Any, free: Callable[..., Any], *free_args: Any) -> None:
        """Take ownership of ``ptr``; ``free(ptr, *free_args)`` releases it."""
        self._ptr = ptr
        # The finalizer must not reference self, only what freeing needs.
        self._finalizer = weakref.finalize(self, free, ptr, *free_args)
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
        finalizer = self._finalizer
        if finalizer is not None:
            self._finalizer = None
            finalizer()

    def _release(self) -> Any:
        """Give up ownership without freeing (the pointer now belongs to C)."""
        ptr = self.ptr
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._ptr = None
        return ptr

    def __enter__(self: _H) -> _H:
        self.ptr  # raise if closed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
