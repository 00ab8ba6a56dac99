"""Python callbacks called from C, and how exceptions inside them survive.

C cannot propagate a Python exception. Each callback receives a handle to a
:class:`CallbackState` (load progress, abort) or a :class:`SamplerState`
(Python samplers), made with ``ffi.new_handle`` and kept alive by the object
that registered it. If the user's function raises, the exception is
stored on the state, the callback returns the C "stop" value, and the Python
code that made the C call re-raises it once the call has returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .raw import CData, ffi, lib


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


# -- Python samplers (``struct llama_sampler_i``) ------------------------------------------


class SamplerState:
    """What the C side of a Python sampler calls: plain Python callables.

    ``apply(cur_p)`` gets the ``llama_token_data_array *``, ``accept(token)``
    an int, ``reset()`` nothing. The first exception any of them raises is
    kept in ``error`` until :meth:`reraise` (the binding that ran the sampler
    calls it once C has returned). The state lives in :data:`live_sampler_states`
    from :func:`register_sampler` until llama.cpp frees the sampler.
    """

    def __init__(self, name: str, apply: Callable[[CData], None],
                 accept: Callable[[int], None], reset: Callable[[], None]) -> None:
        self.name = name
        self.c_name = ffi.new("char[]", name.encode())
        self.apply = apply
        self.accept = accept
        self.reset = reset
        self.error: BaseException | None = None
        self.handle = ffi.new_handle(self)

    def fail(self, exc: BaseException) -> None:
        if self.error is None:  # the first exception explains the others
            self.error = exc

    def reraise(self) -> None:
        err, self.error = self.error, None
        if err is not None:
            raise err


live_sampler_states: set[SamplerState] = set()
"""States of Python samplers C still points at (until ``iface.free``)."""


def register_sampler(state: SamplerState) -> None:
    """Keep ``state`` alive until llama.cpp frees its sampler."""
    live_sampler_states.add(state)


def _sampler_state(smpl: CData) -> SamplerState:
    state: SamplerState = ffi.from_handle(smpl.ctx)
    return state


@ffi.def_extern()
def _llama_cffi_smpl_name(smpl):  # type: ignore[no-untyped-def]
    return _sampler_state(smpl).c_name


@ffi.def_extern()
def _llama_cffi_smpl_accept(smpl, token):  # type: ignore[no-untyped-def]
    st = _sampler_state(smpl)
    try:
        st.accept(int(token))
    except BaseException as exc:  # noqa: BLE001 - re-raised after the C call
        st.fail(exc)


@ffi.def_extern()
def _llama_cffi_smpl_apply(smpl, cur_p):  # type: ignore[no-untyped-def]
    st = _sampler_state(smpl)
    try:
        st.apply(cur_p)
    except BaseException as exc:  # noqa: BLE001 - re-raised after the C call
        st.fail(exc)


@ffi.def_extern()
def _llama_cffi_smpl_reset(smpl):  # type: ignore[no-untyped-def]
    st = _sampler_state(smpl)
    try:
        st.reset()
    except BaseException as exc:  # noqa: BLE001 - re-raised after the C call
        st.fail(exc)


@ffi.def_extern()
def _llama_cffi_smpl_free(smpl):  # type: ignore[no-untyped-def]
    live_sampler_states.discard(_sampler_state(smpl))


def _make_sampler_interface() -> CData:
    iface = ffi.new("struct llama_sampler_i *")
    iface.name = lib._llama_cffi_smpl_name
    iface.accept = lib._llama_cffi_smpl_accept
    iface.apply = lib._llama_cffi_smpl_apply
    iface.reset = lib._llama_cffi_smpl_reset
    iface.free = lib._llama_cffi_smpl_free  # clone stays NULL
    return iface


SAMPLER_INTERFACE: CData = _make_sampler_interface()
"""The ``struct llama_sampler_i *`` shared by every Python sampler; it lives for
the whole process, like llama.cpp's static interfaces."""
