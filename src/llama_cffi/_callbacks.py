"""Python callbacks called from C, and how exceptions inside them survive.

C cannot propagate a Python exception. Each callback receives a handle to a
:class:`CallbackState` (made with ``ffi.new_handle`` and kept alive by the
object that registered it). If the user's function raises, the exception is
stored on the state, the callback returns the C "stop" value, and the Python
code that made the C call re-raises it once the call has returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._ffi import ffi


class CallbackState:
    """A user callback plus the exception it raised, if any."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.error: BaseException | None = None
        self.stopped = False  # the callback asked C to stop
        self.handle = ffi.new_handle(self)

    def reraise(self) -> None:
        err, self.error = self.error, None
        if err is not None:
            raise err


@ffi.def_extern(onerror=lambda *exc: False)
def _llama_cffi_progress(progress, user_data):  # type: ignore[no-untyped-def]
    state: CallbackState = ffi.from_handle(user_data)
    try:
        result = state.func(float(progress))
    except BaseException as exc:  # noqa: BLE001 - re-raised after the C call
        state.error = exc
        state.stopped = True
        return False
    go_on = result is None or bool(result)
    state.stopped = not go_on
    return go_on


@ffi.def_extern(onerror=lambda *exc: True)
def _llama_cffi_abort(user_data):  # type: ignore[no-untyped-def]
    state: CallbackState = ffi.from_handle(user_data)
    try:
        stop = bool(state.func())
    except BaseException as exc:  # noqa: BLE001 - re-raised after the C call
        state.error = exc
        stop = True
    state.stopped = stop
    return stop
