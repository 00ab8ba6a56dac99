"""The portable wheel (issue 22): built with -DLLAMA_CFFI_PORTABLE=ON, installed
into a fresh virtual environment with no compiler reachable, it loads the best
CPU variant for this machine, says which and why, and generates the same
greedy text as llama.cpp's own tool from the native build; a forced lower
variant gives the same text too.

scripts/ci_portable.sh builds the wheel, installs it and runs this file with
LLAMA_CFFI_TEST_PORTABLE=1 and LLAMA_CFFI_PORTABLE_PYTHON (the fresh
environment's python). Every check runs that python in a child process whose
PATH holds only the environment's bin folder (no cc, c++, gcc or cmake) and
without CC/CXX. Without LLAMA_CFFI_TEST_PORTABLE=1 those tests skip.

The selection logic of llama_cffi._bindings.loader (which variant, and the
errors for an unknown or unsupported one) is tested here on any build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llama_cffi._bindings import loader

from .test_amx import cpu_flags
from .test_reference_generation import PROMPTS, llama_simple

ENABLED = os.environ.get("LLAMA_CFFI_TEST_PORTABLE") == "1"
_skip = pytest.mark.skipif(
    not ENABLED, reason="needs the portable wheel, built by scripts/ci_portable.sh "
                        "(LLAMA_CFFI_TEST_PORTABLE=1)")


def needs_wheel(fn: Any) -> Any:
    """Marker ``portable``, skipped unless LLAMA_CFFI_TEST_PORTABLE=1."""
    return pytest.mark.portable(_skip(fn))

N_PREDICT = 64

# The instruction sets each x86 variant needs (ggml/src/CMakeLists.txt's list,
# as /proc/cpuinfo names them): an independent account of which one is best.
VARIANT_FLAGS = {
    "x64": set(),
    "sse42": {"sse4_2"},
    "sandybridge": {"sse4_2", "avx"},
    "ivybridge": {"sse4_2", "avx", "f16c"},
    "piledriver": {"sse4_2", "avx", "f16c", "fma"},
    "haswell": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"},
    "skylakex": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f"},
    "cannonlake": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f", "avx512vbmi"},
    "cascadelake": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f", "avx512_vnni"},
    "icelake": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f", "avx512vbmi",
                "avx512_vnni"},
    "cooperlake": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f", "avx512_vnni",
                   "avx512_bf16"},
    "zen4": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f", "avx512vbmi",
             "avx512_vnni", "avx512_bf16"},
    "alderlake": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx_vnni"},
    "sapphirerapids": {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f",
                       "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"},
}


# -- the selection logic, on any build ---------------------------------------------------


def variants(**scores: int) -> list[loader.CpuVariant]:
    return sorted((loader.CpuVariant(n, f"/x/libggml-cpu-{n}.so", s) for n, s in scores.items()),
                  key=lambda v: v.score, reverse=True)


def test_best_supported_variant_is_chosen() -> None:
    v, why = loader.choose_cpu_variant(variants(x64=1, haswell=64, zen4=400,
                                                sapphirerapids=0), None)
    assert v.name == "zen4"
    assert why.startswith("highest-scoring of the 3 variants this CPU supports")


def test_forced_variant_and_its_errors() -> None:
    vs = variants(x64=1, haswell=64, zen4=0)
    v, why = loader.choose_cpu_variant(vs, "x64")
    assert v.name == "x64" and why == f"forced by {loader.ENV_CPU_VARIANT}"
    with pytest.raises(loader.BackendLoadError, match=r"no CPU variant of that name "
                                                      r"\(it has: zen4, x64, haswell\)"):
        loader.choose_cpu_variant(vs, "skylake")
    with pytest.raises(loader.BackendLoadError, match="this CPU cannot run the zen4 variant"):
        loader.choose_cpu_variant(vs, "zen4")
    with pytest.raises(loader.BackendLoadError, match="none of this build's CPU variants"):
        loader.choose_cpu_variant(variants(zen4=0), None)


def test_backend_modules_are_found_by_file_name(tmp_path: Path) -> None:
    for name in ("libggml-cpu-zen4.so", "libggml-cpu-x64.so", "libggml-rpc.so",
                 "libggml-base.so", "libggml.so", "libllama.so", "libggml-vulkan.so.txt"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(loader.backend_modules(tmp_path)) == ["cpu-x64", "cpu-zen4", "rpc"]


# -- the portable wheel, in its own environment -------------------------------------------


def portable_python() -> Path:
    env = os.environ.get("LLAMA_CFFI_PORTABLE_PYTHON")
    if not env or not Path(env).exists():
        pytest.fail("LLAMA_CFFI_TEST_PORTABLE=1 needs LLAMA_CFFI_PORTABLE_PYTHON: the python "
                    "of the environment the portable wheel is installed in")
    return Path(env)


def child_env(**extra: str) -> dict[str, str]:
    """PATH with only the environment's bin folder; no compiler variables."""
    py = portable_python()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS", "PYTHONPATH",
                        "LLAMA_CFFI_CPU_VARIANT", "LD_LIBRARY_PATH")}
    env["PATH"] = str(py.parent)
    env.update(extra)
    return env


def run_child(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(portable_python()), "-c", code, *args], env=child_env(**env),
                          capture_output=True, text=True, timeout=600, cwd="/")


INFO = r"""
import json, llama_cffi as lc
i = lc.system_info()
print(json.dumps({"file": lc.__file__, "options": list(i.build_options),
                  "variant": i.cpu_variant, "reason": i.cpu_variant_reason,
                  "patches": list(i.patches)}))
"""

GENERATE = r"""
import sys, llama_cffi as lc
path, prompt, n_predict = sys.argv[1], sys.argv[2], int(sys.argv[3])
with lc.Model(path) as model:
    vocab = model.vocab
    toks = vocab.tokenize(prompt, add_special=True, parse_special=True)
    with model.context(n_ctx=len(toks) + n_predict - 1, n_batch=len(toks), n_threads=4,
                       n_threads_batch=4) as ctx, lc.SamplerChain([lc.sampling.greedy()]) as ch:
        gen = list(lc.Generation(ctx, ch, toks, max_tokens=n_predict))
    text = b"".join(vocab.token_to_piece(t, special=True) for t in toks + gen)
sys.stdout.buffer.write(text + b"\n")
"""


def info(**env: str) -> dict[str, object]:
    proc = run_child(INFO, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def built_variants() -> list[str]:
    out = info()
    pkg = Path(str(out["file"])).parent
    return sorted(n[4:] for n in loader.backend_modules(pkg) if n.startswith("cpu-"))


@needs_wheel
def test_no_compiler_is_reachable() -> None:
    code = ("import shutil, os; print([t for t in ('cc', 'c++', 'gcc', 'g++', 'clang', 'cmake', "
            "'ninja') if shutil.which(t)], os.environ.get('CC'), os.environ.get('CXX'))")
    proc = run_child(code)
    assert proc.stdout.strip() == "[] None None"


@needs_wheel
def test_the_best_variant_for_this_cpu_is_loaded() -> None:
    out = info()
    assert "GGML_BACKEND_DL" in out["options"] and "GGML_CPU_ALL_VARIANTS" in out["options"]
    assert "GGML_NATIVE" not in out["options"]
    flags = cpu_flags()
    runnable = [v for v in built_variants() if VARIANT_FLAGS.get(v, {"?"}) <= flags]
    best = max(runnable, key=lambda v: len(VARIANT_FLAGS[v]))
    assert out["variant"] == best
    assert str(out["reason"]).startswith(f"highest-scoring of the {len(runnable)} variant")
    assert "0001-amx-per-thread-tile-permission.patch" in str(out["patches"])


@needs_wheel
def test_cli_system_info_names_the_variant() -> None:
    exe = portable_python().parent / "llama-cffi"
    proc = subprocess.run([str(exe), "system-info"], env=child_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("CPU variant: ")]
    assert line and "highest-scoring of the" in line[0]
    proc = subprocess.run([str(exe), "system-info", "--cpu-variant", "x64"], env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CPU variant: x64 (forced by LLAMA_CFFI_CPU_VARIANT)" in proc.stdout


@needs_wheel
def test_greedy_text_equals_the_native_llama_simple(smollm2_path: Path, tools_dir: Path) -> None:
    prompt = PROMPTS["smollm2-135m"]
    proc = run_child(GENERATE, str(smollm2_path), prompt, str(N_PREDICT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.encode() == llama_simple(tools_dir, smollm2_path, prompt, N_PREDICT)


def llama_simple_on_variant(tools_dir: Path, level: str, tmp_path: Path, model: Path,
                            prompt: str, n_predict: int) -> bytes:
    """llama.cpp's own llama-simple computing on one CPU variant of the portable
    wheel: a copy of the native build's binary in a folder that holds the
    wheel's libraries and only that variant (ggml's loader looks for
    ``libggml-cpu-*`` next to the executable), the wheel's libraries found
    first through LD_LIBRARY_PATH (the binary's RUNPATH comes after it)."""
    pkg = Path(str(info()["file"])).parent
    run_dir = tmp_path / f"llama-simple-{level}"
    run_dir.mkdir()
    shutil.copy2(tools_dir / "llama-simple", run_dir / "llama-simple")
    for lib in ("libllama.so", "libggml.so", "libggml-base.so", f"libggml-cpu-{level}.so"):
        (run_dir / lib).symlink_to(pkg / lib)
    libs = [str(run_dir)] + [str(p) for p in pkg.parent.glob("llama_cffi.libs")]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(libs))
    proc = subprocess.run([str(run_dir / "llama-simple"), "-m", str(model), "-n", str(n_predict),
                           prompt], capture_output=True, timeout=300, env=env, cwd=run_dir)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, stderr[-2000:]
    # the reference ran on the wheel's variant, not on the native build's CPU code
    assert f"libggml-cpu-{level}.so" in stderr, stderr[-2000:]
    return proc.stdout


@needs_wheel
@pytest.mark.parametrize("level", ["haswell", "x64"])
def test_a_forced_lower_variant_gives_llama_cpps_text_on_that_variant(
        level: str, smollm2_path: Path, tools_dir: Path, tmp_path: Path) -> None:
    """Forced, a lower variant is the one that computes, and its greedy text is
    llama.cpp's own on that variant. (It is not byte-equal to the best
    variant's: the AVX2 and scalar kernels sum in another order, and the small
    model's greedy choice flips within the first ten tokens.)"""
    if level not in built_variants():
        pytest.fail(f"the portable wheel has no {level} variant: build it with "
                    f"LLAMA_CFFI_CPU_VARIANTS including {level} (scripts/ci_portable.sh does)")
    out = info(LLAMA_CFFI_CPU_VARIANT=level)
    assert out["variant"] == level and out["reason"] == "forced by LLAMA_CFFI_CPU_VARIANT"
    prompt = PROMPTS["smollm2-135m"]
    proc = run_child(GENERATE, str(smollm2_path), prompt, str(N_PREDICT),
                     LLAMA_CFFI_CPU_VARIANT=level)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = llama_simple_on_variant(tools_dir, level, tmp_path, smollm2_path, prompt,
                                        N_PREDICT)
    assert proc.stdout.encode() == reference


@needs_wheel
def test_an_unknown_or_unsupported_variant_is_a_clear_error() -> None:
    names = built_variants()
    proc = run_child(INFO, LLAMA_CFFI_CPU_VARIANT="pentium2")
    assert proc.returncode != 0
    assert "LLAMA_CFFI_CPU_VARIANT=pentium2: this build has no CPU variant of that name" \
        in proc.stderr
    assert all(n in proc.stderr for n in names)
    flags = cpu_flags()
    unsupported = [v for v in names if not VARIANT_FLAGS.get(v, set()) <= flags]
    for level in unsupported:  # e.g. sapphirerapids on a CPU without AMX
        proc = run_child(INFO, LLAMA_CFFI_CPU_VARIANT=level)
        assert proc.returncode != 0
        assert f"this CPU cannot run the {level} variant" in proc.stderr


@needs_wheel
def test_the_extension_uses_the_stable_abi() -> None:
    out = info()
    pkg = Path(str(out["file"])).parent
    ext = [p.name for p in pkg.iterdir() if p.name.startswith("_llama.")]
    assert ext == ["_llama.abi3.so"], ext
    if shutil.which("nm"):
        syms = subprocess.run(["nm", "-D", "--undefined-only", str(pkg / ext[0])],
                              capture_output=True, text=True).stdout
        assert "ggml_backend_cpu_reg" not in syms  # reached through the registry


# -- GPU plugins: what the loader reports and the offload check, on any build -----------


def test_a_plugin_with_no_device_reports_its_count() -> None:
    p = loader.PluginReport("cuda", "llama_cffi_cuda", (("CUDA", 0),))
    assert p.loaded and p.n_devices == 0 and p.outcome == "loaded CUDA, 0 devices"
    p = loader.PluginReport("vulkan", "llama_cffi_vulkan", (("Vulkan", 2),))
    assert p.outcome == "loaded Vulkan, 2 devices"
    p = loader.PluginReport("cuda", "llama_cffi_cuda", error="libcudart.so.13: cannot open")
    assert not p.loaded and p.outcome == "not loaded: libcudart.so.13: cannot open"


def test_a_failed_load_carries_the_dynamic_loaders_reason(tmp_path: Path) -> None:
    bad = tmp_path / "libggml-fake.so"
    bad.write_bytes(b"not an ELF file at all" * 10)
    with pytest.raises(loader.BackendLoadError) as err:
        loader._load(bad, "the fake backend")
    msg = str(err.value)
    assert str(bad) in msg and "see llama.cpp's log" not in msg
    assert "invalid ELF header" in msg or "too short" in msg, msg  # dlerror's words
    # a real library that is no ggml backend module: it opens, the reason says what lacks
    import llama_cffi._llama as ext
    base = Path(str(ext.__file__)).parent / "libggml-base.so"  # beside the extension
    assert "exports no ggml_backend_init" in loader.dlopen_error(base)


def _fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed plugin (entry point + package) whose module is no library."""
    pkg = tmp_path / "fake_gpu_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "libggml-fakegpu.so").write_bytes(b"\0" * 64)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = loader.metadata.EntryPoint("fakegpu", "fake_gpu_plugin", loader.ENTRY_POINT_GROUP)
    monkeypatch.setattr(loader, "_entry_points", lambda: [ep])


def test_a_plugin_that_fails_to_load_is_reported_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_plugin(tmp_path, monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"plugin 'fakegpu' \(fake_gpu_plugin\) was not "
                                            r"loaded: could not load the fakegpu backend"):
        (rep,) = loader._plugins({"cpu"})
    assert rep.name == "fakegpu" and not rep.loaded
    assert "libggml-fakegpu.so" in rep.error and "see llama.cpp's log" not in rep.error


def test_plugins_beside_a_source_build_are_named_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_plugin(tmp_path, monkeypatch)
    monkeypatch.setattr(loader, "_ignored", None)
    with pytest.warns(RuntimeWarning, match=r"fakegpu \(fake_gpu_plugin\) installed but not "
                                            r"used: this llama_cffi is a source build"):
        assert loader.ignored_plugins() == ("fakegpu (fake_gpu_plugin)",)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loader.ignored_plugins() == ("fakegpu (fake_gpu_plugin)",)  # no second warning


def _portable_core(monkeypatch: pytest.MonkeyPatch,
                   *plugins: loader.PluginReport) -> None:
    """This process seen as a portable core (GGML_BACKEND_DL, no GPU backend
    compiled in) whose loader found ``plugins``; the devices are this machine's
    real ones (no GPU here)."""
    from llama_cffi.objects import system
    if system._gpu_devices():
        pytest.skip("this machine has a GPU device: no 'no device' case to show")
    monkeypatch.setattr(system, "BUILD_BACKENDS", ("CPU",))
    monkeypatch.setattr(system, "BUILD_OPTIONS", ("GGML_BACKEND_DL",))
    rep = loader.LoadReport("zen4", "best", (), (), tuple(plugins))
    monkeypatch.setattr(loader, "report", lambda: rep)


def test_gpu_offload_with_a_plugin_but_no_device_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_cffi.errors import LlamaError
    from llama_cffi.objects.system import check_gpu_offload
    _portable_core(monkeypatch, loader.PluginReport("cuda", "llama_cffi_cuda", (("CUDA", 0),)))
    with pytest.raises(LlamaError, match=r"n_gpu_layers=99 asks for GPU offload.*plugin "
                                         r"'cuda' \(llama_cffi_cuda\) loaded CUDA, 0 devices"):
        check_gpu_offload(99, None)
    check_gpu_offload(0, None)  # the CPU, asked for
    _portable_core(monkeypatch, loader.PluginReport(
        "vulkan", "llama_cffi_vulkan", error="libvulkan.so.1: cannot open shared object file"))
    with pytest.raises(LlamaError, match=r"plugin 'vulkan' \(llama_cffi_vulkan\) not loaded: "
                                         r"libvulkan.so.1: cannot open shared object file"):
        check_gpu_offload(5, None)


def test_gpu_offload_on_a_portable_core_without_plugins_stays_on_the_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_cffi.objects.system import check_gpu_offload
    _portable_core(monkeypatch)
    check_gpu_offload(99, None)  # CPU-only build: llama.cpp's behaviour, no error


def test_system_info_names_each_plugin_and_its_devices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cffi as lc
    _portable_core(monkeypatch, loader.PluginReport("cuda", "llama_cffi_cuda", (("CUDA", 0),)))
    info = lc.system_info()
    assert info.cpu_variant == "zen4" and info.cpu_variant_reason == "best"
    assert [p.outcome for p in info.loading.plugins] == ["loaded CUDA, 0 devices"]
    assert "plugin cuda (llama_cffi_cuda): loaded CUDA, 0 devices" in str(info).splitlines()


def test_a_source_build_names_installed_plugins_in_a_fresh_process(tmp_path: Path) -> None:
    """A plugin installed (a dist-info with the entry point) beside this
    build: a source build warns once at initialisation and system-info lists
    it as not used; a portable core tries to load it and says why it failed."""
    import sys

    from llama_cffi._bindings.raw import BUILD_OPTIONS
    pkg = tmp_path / "fake_gpu_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "libggml-fakegpu.so").write_bytes(b"\0" * 64)
    dist = tmp_path / "fake_gpu_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-gpu-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{loader.ENTRY_POINT_GROUP}]\nfakegpu = fake_gpu_plugin\n")
    code = ("import warnings; warnings.simplefilter('always'); import llama_cffi as lc; "
            "i = lc.system_info(); lc.system_info(); print(i)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if "GGML_BACKEND_DL" in BUILD_OPTIONS:
        assert "plugin fakegpu (fake_gpu_plugin): not loaded" in proc.stdout
    else:
        assert proc.stderr.count("fakegpu (fake_gpu_plugin) installed but not used") == 1, \
            proc.stderr
        assert ("plugins not used (source build, backends compiled in): fakegpu "
                "(fake_gpu_plugin)") in proc.stdout
