"""Ownership of C memory, and which objects threads may share.

**Ownership rule** (kept by every object of the package). Every numpy array
or buffer llama_cffi hands out either

* owns its memory (a copy: ``Context.logits()``, ``state_get()`` ...), or
* is a view whose ``base`` holds a reference to the object that owns the C
  memory, so that the memory is freed only when the last reference to it
  goes (``Batch.tokens`` and the other batch arrays are views of cffi-owned
  arrays, made with ``ffi.buffer`` of the owning cdata);

and ``close()`` never frees memory a live view can reach: it drops the
object's own references and makes the object unusable (ClosedError). What
C lends to a callback (a Python sampler's candidates) is wrapped for the
callback only: the wrapper raises a LlamaError afterwards, and the numpy
views it gave out reference Python-owned token data (the chain's buffer, or
a copy written back after the callback), never memory C frees. Raw C values
(``ptr``, ``Batch.struct``, ``Vocab.ptr``) are for calling llama.cpp
yourself: like any C pointer they are valid only while their object is open.

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

**Threads.** Each class says in its docstring whether threads may share it.

* Objects used by one thread at a time (Context, SamplerChain, Sampler,
  Batch) hold a :class:`UseGuard`: a second thread calling in while another
  is inside gets a :class:`~llama_cffi.errors.LlamaError` at once (never a
  data race on C memory), and so does a call made from inside one of the
  object's own callbacks (an abort callback, a Python sampler). ``close()``
  waits for a call running on another thread to finish before freeing.
* Objects threads may share (Model and its Vocab, LoraAdapter) hold a
  :class:`SharedUse`: any number of threads use them at once, and
  ``close()`` waits until none is inside a C call on them.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..errors import ClosedError, LlamaError

_H = TypeVar("_H", bound="Handle")
_CHILDREN_LOCK = threading.Lock()


class UseGuard:
    """Exclusive use of one object by one thread at a time, never waiting.

    :meth:`acquire` raises a LlamaError when the object is in use, by another
    thread or (from a callback) by the calling thread itself; :meth:`wait`
    (for ``close()``) blocks until the other thread is done.
    """

    __slots__ = ("_lock", "_owner", "_what")

    def __init__(self, what: str) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._what = what

    def acquire(self) -> None:
        """Take the object, or raise LlamaError if it is in use."""
        if not self._lock.acquire(False):
            if self._owner == threading.get_ident():
                raise LlamaError(
                    f"this {self._what} is already in use by this thread: it cannot be used "
                    "from inside one of its own calls (an abort callback or a Python sampler)")
            raise LlamaError(f"this {self._what} is being used by another thread; use one "
                             f"{self._what} per thread or serialise the calls")
        self._owner = threading.get_ident()

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def wait(self) -> None:
        """Take the object, waiting for another thread's call to end (for close())."""
        if self._owner == threading.get_ident():
            raise LlamaError(f"cannot close a {self._what} from inside one of its own calls "
                             "(an abort callback or a Python sampler)")
        self._lock.acquire()
        self._owner = threading.get_ident()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class SharedUse:
    """Use of one object by any number of threads at once; closing waits for them.

    :meth:`use` marks a C call in progress (and raises ClosedError once the
    object is closed or closing); :meth:`close` runs the free function only
    when no call is in progress, and makes new calls fail meanwhile.
    """

    __slots__ = ("_cond", "_users", "_closing")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._users: dict[int, int] = {}  # thread id -> calls in progress
        self._closing = False

    @contextmanager
    def use(self, handle: Handle) -> Iterator[Any]:
        """The handle's pointer, guaranteed not to be freed until the block ends."""
        me = threading.get_ident()
        with self._cond:
            if self._closing:
                raise ClosedError(f"{type(handle).__name__} is being closed")
            ptr = handle.ptr
            self._users[me] = self._users.get(me, 0) + 1
        try:
            yield ptr
        finally:
            with self._cond:
                n = self._users[me] - 1
                if n:
                    self._users[me] = n
                else:
                    del self._users[me]
                    if not self._users:
                        self._cond.notify_all()

    def close(self, what: str, free: Callable[[], None]) -> None:
        """Wait until no call is in progress, then ``free()`` (new calls fail meanwhile)."""
        with self._cond:
            if threading.get_ident() in self._users:
                raise LlamaError(f"cannot close a {what} from inside a call on it")
            while self._closing:  # another thread is closing it: wait for that
                self._cond.wait()
            self._closing = True
            while self._users:
                self._cond.wait()
        try:
            free()
        finally:
            with self._cond:
                self._closing = False
                self._cond.notify_all()


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
    _shared: SharedUse | None = None  # set by objects threads may share
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
        with _CHILDREN_LOCK:  # children are added from any thread
            if self._children is None:
                self._children = weakref.WeakSet()
            self._children.add(child)

    def _child_list(self) -> list[Handle]:
        """A snapshot of the live children."""
        with _CHILDREN_LOCK:
            return list(self._children) if self._children else []

    @contextmanager
    def _using(self) -> Iterator[Any]:
        """The pointer, not freed before the block ends (for shared objects,
        whose ``close()`` waits); ClosedError once closed."""
        shared = self._shared
        if shared is None:
            yield self.ptr
        else:
            with shared.use(self) as ptr:
                yield ptr

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
        for child in self._child_list():
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
            if name in type(self)._FACTS and self._ptr is None:
                raise ClosedError(f"{type(self).__name__} is closed")
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __enter__(self: _H) -> _H:
        self.ptr  # raise if closed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
