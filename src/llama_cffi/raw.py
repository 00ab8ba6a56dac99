"""llama.cpp's C API itself: the supported low-level module.

``ffi`` and ``lib`` are the compiled cffi module's: ``lib.llama_*`` and
``lib.ggml_*`` are llama.cpp's C functions, called directly (API mode: no
libffi, no ctypes; the GIL is released during each call). Use this module,
not the private ``llama_cffi._bindings`` or ``llama_cffi._llama``, which
may change in any release.

Stability
    This module's names (``ffi``, ``lib``, ``NULL``, ``LLAMA_COMMIT``,
    ``BUILD_BACKENDS``, ``BUILD_OPTIONS``) are stable. What ``lib`` holds is
    llama.cpp's API at the pinned commit (``LLAMA_COMMIT``), limited to the
    functions declared in the package's ``cdef/*.cdef``; it changes when
    llama.cpp changes its API. The declarations were compiled against
    llama.cpp's own headers, so a signature here is always the real one.
    Check for a function with ``hasattr(lib, "llama_...")``.

Safety
    Nothing here checks arguments. A freed pointer, a wrong size or an
    out-of-range token id can crash the interpreter; llama.cpp's
    ``GGML_ASSERT`` aborts the process. The objects of :mod:`llama_cffi`
    check all of that and own their pointers; reach for ``lib`` for what
    they do not offer, and keep those objects alive (and unclosed) while
    ``lib`` uses their pointers.

Pointers from the objects
    ``model.ptr`` (``llama_model *``), ``ctx.ptr`` (``llama_context *``),
    ``model.vocab.ptr`` (``const llama_vocab *``), ``chain.ptr``
    (``llama_sampler *``), ``batch.ptr``, ``adapter.ptr``. A context belongs
    to its thread: for an :class:`~llama_cffi.LLM`'s context, run the code
    on its engine thread with ``llm.engine.call(fn)``, and tell the engine
    when you changed the KV cache (any ``llama_memory_*`` or state call made
    through ``lib`` bypasses ``Context.changes``): call ``llm.ctx.clear()``
    afterwards, or use the :class:`~llama_cffi.Context` methods.

Coming from llama-cpp-python's ``llama_cpp.llama_*`` functions
    Same names, same arguments; ctypes idioms become cffi ones::

        import llama_cpp                              from llama_cffi import raw
        llama_cpp.llama_vocab_n_tokens(vocab)         raw.lib.llama_vocab_n_tokens(model.vocab.ptr)
        (llama_cpp.llama_token * n)()                 raw.ffi.new("llama_token[]", n)
        ctypes.c_char_p(b"text")                      b"text" (or raw.ffi.new("char[]", b"text"))
        ctypes.byref(x) / ctypes.pointer(x)           raw.ffi.addressof(x) / a "T *" from ffi.new
        arr[:n]                                       list(arr[0:n]) or raw.ffi.unpack(arr, n)
        p.contents.field                              p.field (or p[0].field)
        llama_cpp.llama_get_logits_ith(ctx, i)        raw.lib.llama_get_logits_ith(ctx.ptr, i)
          then np.ctypeslib.as_array(p, (n,))           then np.frombuffer(raw.ffi.buffer(p, 4 * n),
                                                                           dtype=np.float32)
        None (a NULL pointer)                         raw.NULL (``ffi.NULL``)

    For example, tokenizing by hand::

        buf = raw.ffi.new("llama_token[]", 64)
        n = raw.lib.llama_tokenize(model.vocab.ptr, b"Hello", 5, buf, 64, True, False)
        tokens = list(buf[0:n])

    Most of those calls have a checked equivalent in the objects:
    ``model.vocab.tokenize``, ``ctx.logits(i)``, ``ctx.seq_rm``,
    ``SamplerChain.from_params`` ...
"""

from __future__ import annotations

from ._bindings.raw import (
    BUILD_BACKENDS,
    BUILD_OPTIONS,
    LLAMA_COMMIT,
    NULL,
    ffi,
    lib,
)

__all__ = ["BUILD_BACKENDS", "BUILD_OPTIONS", "LLAMA_COMMIT", "NULL", "ffi", "lib"]
