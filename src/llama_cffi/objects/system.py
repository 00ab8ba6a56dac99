"""What was compiled and what is there: backends, devices, build facts."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from .._bindings import backend, loader
from .._bindings.loader import ENV_CPU_VARIANT as ENV_CPU_VARIANT
from .._bindings.init import ensure_initialised
from .._bindings.mtmd import HAVE_MTMD
from .._bindings.raw import (
    BUILD_BACKENDS,
    BUILD_OPTIONS,
    BUILD_VERSION,
    LLAMA_COMMIT,
    CData,
)
from ..errors import LlamaError


@dataclass(frozen=True)
class Device:
    """A ggml backend device (a CPU, a GPU, an RPC server, ...).

    name: the name llama.cpp's ``-dev`` flag takes (``CPU``, ``CUDA0``,
        ``RPC0`` ...).
    type: ``"cpu"``, ``"gpu"``, ``"igpu"`` or ``"accel"``.
    memory_free, memory_total: bytes, as the device reports them now.
    """

    index: int
    name: str
    description: str
    type: str
    backend: str
    memory_free: int
    memory_total: int
    device_id: str | None = None


def _is_rpc(dev: CData) -> bool:
    return backend.device_backend_name(dev) == "RPC"


def rpc_endpoint_alive(endpoint: str, timeout: float = 2.0) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


def check_rpc_devices(devs: list[CData] | None) -> None:
    """Refuse to use an RPC device whose server is gone.

    llama.cpp's RPC backend aborts the whole process when a server does not
    answer; checking that each server still accepts connections first turns
    the common case (a server that was stopped) into an exception. ``devs``
    are the devices a model will use, ``None`` for llama.cpp's default (every
    GPU-type device).
    """
    if devs is None:
        devs = [d for d in backend.all_devices() if backend.device_type(d) in
                (backend.DEVICE_TYPE_GPU, backend.DEVICE_TYPE_IGPU)]
    for dev in devs:
        if _is_rpc(dev):
            endpoint = backend.device_description(dev)
            if not rpc_endpoint_alive(endpoint):
                raise LlamaError(
                    f"the RPC server of device {backend.device_name(dev)} at "
                    f"{endpoint} does not answer; restart it, or pass devices=[...] without "
                    "that device (llama.cpp would abort the process)")


# compiled backends that bring no device of their own (RPC devices are added
# by the user, BLAS only speeds up the CPU)
_HOST_BACKENDS = frozenset({"CPU", "BLAS", "RPC"})


def _gpu_devices() -> list[CData]:
    return [d for d in backend.all_devices()
            if backend.device_type(d) in (backend.DEVICE_TYPE_GPU, backend.DEVICE_TYPE_IGPU)]


def check_gpu_offload(n_gpu_layers: int | None, devs: list[CData] | None) -> None:
    """Refuse ``n_gpu_layers`` when this build's GPU backend found no device.

    llama.cpp treats ``n_gpu_layers`` as a limit and quietly runs on the CPU
    when there is no GPU. In a build with a GPU backend compiled in (Vulkan,
    CUDA ...) or, in a portable build, with a GPU plugin installed
    (``llama-cffi-cuda`` ...), that usually means a missing driver, hidden
    devices or a plugin that did not load, so asking for layers on the GPU
    without any GPU-type device raises instead, naming the backend or plugin
    and why. A CPU-only build (a portable one without plugins too) keeps
    llama.cpp's behaviour (``n_gpu_layers`` is ignored); so does
    ``devices=[...]`` (each named device was found) and the default (``None``).
    """
    if not n_gpu_layers or devs is not None:
        return
    gpu_backends = [b for b in BUILD_BACKENDS if b not in _HOST_BACKENDS]
    if not gpu_backends and "GGML_BACKEND_DL" not in BUILD_OPTIONS:
        return  # CPU-only source build
    ensure_initialised()
    rep = loader.report()
    plugins = rep.plugins if rep else ()
    if not gpu_backends and not plugins:
        return  # portable build without GPU plugins: CPU-only
    if _gpu_devices():
        return
    what = []
    if gpu_backends:
        what.append(f"this build's {', '.join(gpu_backends)} backend found no device")
    what += [f"plugin {p.name!r} ({p.module}) {p.outcome}" for p in plugins]
    raise LlamaError(
        f"n_gpu_layers={n_gpu_layers} asks for GPU offload, but there is no GPU device: "
        f"{'; '.join(what)} (driver missing, devices hidden by GGML_VK_VISIBLE_DEVICES / "
        "CUDA_VISIBLE_DEVICES ...); pass n_gpu_layers=0 to run on the CPU")


def _device(index: int, dev: CData) -> Device:
    if _is_rpc(dev) and not rpc_endpoint_alive(backend.device_description(dev)):
        return Device(index=index, name=backend.device_name(dev),
                      description=backend.device_description(dev) + " (unreachable)",
                      type="gpu", backend=backend.device_backend_name(dev),
                      memory_free=0, memory_total=0)
    props = backend.device_props(dev)
    return Device(
        index=index,
        name=props.name,
        description=props.description,
        type=backend.DEVICE_TYPE_NAMES.get(props.type, str(props.type)),
        backend=backend.device_backend_name(dev),
        memory_free=props.memory_free,
        memory_total=props.memory_total,
        device_id=props.device_id or None,
    )


def devices() -> list[Device]:
    """All devices ggml found, in llama.cpp's order."""
    ensure_initialised()
    return [_device(i, dev) for i, dev in enumerate(backend.all_devices())]


def find_device(name: str) -> CData:
    """The ``ggml_backend_dev_t`` called ``name`` (case-insensitive), or raise."""
    ensure_initialised()
    dev = backend.device_by_name(name)
    if dev is None:
        known = ", ".join(d.name for d in devices())
        raise LlamaError(f"no device named {name!r}; available devices: {known}")
    return dev


@dataclass(frozen=True)
class Backend:
    """A registered ggml backend and the features it reports (CPU: AVX2, ...)."""

    name: str
    n_devices: int
    features: dict[str, str] = field(default_factory=dict)


def backends() -> list[Backend]:
    """The registered ggml backends, with their features."""
    ensure_initialised()
    out = []
    for i in range(backend.reg_count()):
        reg = backend.reg_get(i)
        out.append(Backend(backend.reg_name(reg), backend.reg_dev_count(reg),
                           backend.reg_features(reg)))
    return out


@dataclass(frozen=True)
class BackendLoading:
    """How the backends were loaded: the CPU variant of a portable build and
    the GPU plugins (``GGML_BACKEND_DL``); empty in a source build.

    cpu_variant: the CPU backend variant loaded (``zen4``, ``haswell`` ...);
        ``""`` in a native build, whose one CPU backend is compiled for its
        machine.
    cpu_variant_reason: why that variant: the highest-scoring one this CPU
        supports, or forced by ``LLAMA_CFFI_CPU_VARIANT``.
    plugins: each installed GPU plugin: loaded (its backends and device
        counts) or not and why.
    ignored_plugins: plugins installed beside a source build, which has its
        backends compiled in and cannot load them.
    """

    cpu_variant: str = ""
    cpu_variant_reason: str = ""
    plugins: tuple[loader.PluginReport, ...] = ()
    ignored_plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class SystemInfo:
    """What this installation of llama_cffi was built from and can use.
    Immutable: may be shared across threads.

    version: llama_cffi's version.
    llama_commit: the llama.cpp commit it was compiled from.
    ggml_version: ggml's version string.
    compiled_backends: backends the build was asked for (``GGML_CUDA=ON`` -> ``CUDA``).
    backends: backends registered at run time, with their features.
    devices: devices found at run time.
    build_options: GGML_*/LLAMA_* options that were ON in the build.
    llama_system_info: llama.cpp's own one-line summary (``llama_print_system_info``).
    supports_multimodal: whether libmtmd (images/audio through a projector)
        was compiled in (``-DLLAMA_CFFI_MTMD``, ON by default).
    loading: the CPU variant and GPU plugins loaded (portable builds).
    patches: the files of ``patches/`` applied to llama.cpp's source for this build.
    """

    version: str
    llama_commit: str
    ggml_version: str
    compiled_backends: tuple[str, ...]
    backends: list[Backend]
    devices: list[Device]
    build_options: tuple[str, ...]
    supports_mmap: bool
    supports_mlock: bool
    supports_gpu_offload: bool
    supports_rpc: bool
    llama_system_info: str
    supports_multimodal: bool = False
    loading: BackendLoading = BackendLoading()
    patches: tuple[str, ...] = ()

    @property
    def cpu_variant(self) -> str:
        """The CPU variant loaded (``loading.cpu_variant``); ``""`` in a native build."""
        return self.loading.cpu_variant

    @property
    def cpu_variant_reason(self) -> str:
        """Why that variant (``loading.cpu_variant_reason``)."""
        return self.loading.cpu_variant_reason

    @property
    def cpu_features(self) -> dict[str, str]:
        for b in self.backends:
            if b.name == "CPU":
                return b.features
        return {}

    def __str__(self) -> str:
        lines = [
            f"llama_cffi {self.version}",
            f"llama.cpp commit {self.llama_commit} (ggml {self.ggml_version})",
            f"compiled backends: {', '.join(self.compiled_backends)}",
            "registered backends: " + ", ".join(
                f"{b.name} ({b.n_devices} device{'s' if b.n_devices != 1 else ''})"
                for b in self.backends),
            "devices:",
        ]
        for d in self.devices:
            mem = f"{d.memory_free / 2**20:.0f}/{d.memory_total / 2**20:.0f} MiB free"
            lines.append(f"  {d.name} [{d.type}] {d.description} ({mem})")
        lines.append(f"build options: {', '.join(self.build_options)}")
        lines.append(f"multimodal (libmtmd): {'yes' if self.supports_multimodal else 'no'}")
        if self.cpu_variant:
            lines.append(f"CPU variant: {self.cpu_variant} ({self.cpu_variant_reason})")
        for p in self.loading.plugins:
            lines.append(f"plugin {p.name} ({p.module}): {p.outcome}")
        if self.loading.ignored_plugins:
            lines.append(f"plugins not used (source build, backends compiled in): "
                         f"{', '.join(self.loading.ignored_plugins)}")
        lines.append(f"llama.cpp patches: {', '.join(self.patches) or 'none'}")
        lines.append(f"system: {self.llama_system_info}")
        return "\n".join(lines)


def system_info() -> SystemInfo:
    """Report the llama.cpp commit, compiled backends, CPU features and devices."""
    ensure_initialised()
    rep = loader.report()
    supports = backend.supports()
    return SystemInfo(
        version=BUILD_VERSION,
        llama_commit=LLAMA_COMMIT,
        ggml_version=backend.ggml_version(),
        compiled_backends=BUILD_BACKENDS,
        backends=backends(),
        devices=devices(),
        build_options=BUILD_OPTIONS,
        supports_mmap=supports["mmap"],
        supports_mlock=supports["mlock"],
        supports_gpu_offload=supports["gpu_offload"],
        supports_rpc=supports["rpc"],
        llama_system_info=backend.system_info().strip(),
        supports_multimodal=HAVE_MTMD,
        loading=BackendLoading(
            cpu_variant=rep.cpu_variant if rep else "",
            cpu_variant_reason=rep.cpu_reason if rep else "",
            plugins=rep.plugins if rep else (),
            ignored_plugins=() if rep else loader.ignored_plugins()),
        patches=backend.build_patches(),
    )
