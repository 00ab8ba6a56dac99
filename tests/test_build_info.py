"""What the build compiled in, and what the library finds at run time."""

from __future__ import annotations

import llama_cffi as lc
from llama_cffi._bindings import raw as _ffi


def test_system_info_reports_commit_backends_and_devices() -> None:
    info = lc.system_info()
    assert info.llama_commit.startswith("0c1e57098")
    assert info.version == lc.__version__
    assert "CPU" in info.compiled_backends
    assert "RPC" in info.compiled_backends
    registered = {b.name for b in info.backends}
    assert {"CPU", "RPC"} <= registered
    assert any(d.type == "cpu" for d in info.devices)
    assert info.supports_rpc
    assert "GGML_NATIVE" in info.build_options and "GGML_RPC" in info.build_options
    # The CPU backend reports the instruction sets it was compiled for.
    assert info.cpu_features, "CPU backend reported no features"
    text = str(info)
    assert "0c1e57098" in text and "CPU" in text


def test_devices_have_memory_and_names() -> None:
    devs = lc.devices()
    cpu = [d for d in devs if d.type == "cpu"]
    assert cpu and cpu[0].name == "CPU"
    assert cpu[0].memory_total > 0


def test_compiled_version_matches_package() -> None:
    assert _ffi.BUILD_VERSION == lc.__version__
    assert _ffi.LLAMA_COMMIT == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"


def test_extension_is_next_to_its_libraries() -> None:
    # RPATH $ORIGIN: the installed package loads without LD_LIBRARY_PATH.
    import os
    from pathlib import Path

    from llama_cffi import _llama

    # the extension's folder: the package's own in an installed wheel, the
    # build's install folder in an editable install (the sources stay in src/)
    pkg = Path(_llama.__file__).parent
    names = {p.name for p in pkg.iterdir()}
    assert "libllama.so" in names and "libggml.so" in names
    assert any(n.startswith("_llama.") and n.endswith(".so") for n in names)
    assert "LD_LIBRARY_PATH" not in os.environ or str(pkg) not in os.environ["LD_LIBRARY_PATH"]
