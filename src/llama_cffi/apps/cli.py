"""The ``llama-cffi`` command.

Subcommands: ``run`` (prompt in, continuation streamed out), ``pull`` (fetch
a registry model), ``list`` (cached models), ``system-info``. Flags use the
names of llama.cpp's own tools (``-m``, ``-n``, ``-c``, ``-ngl``, ``-ts``,
``--temp`` ...).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..api.llm import LLM
from ..errors import LlamaError
from ..objects import hub
from ..objects import registry as models
from ..objects import rpc
from ..objects.context import default_threads
from ..objects.model import Model
from ..objects.params import SamplingParams, SpeculativeParams
from ..objects.params.fields import from_args
from ..objects.system import ENV_CPU_VARIANT, system_info
from . import bench, cli_media
from .serve import add_serve_parser
from .flags import (add_context_flags, add_model_flags, add_rpc_servers, add_sampling_flags,
                    add_speculative_flags, context_params, model_params, sampling_params)


def _progress_printer(label: str) -> Callable[[float], bool] | None:
    """A load-progress callback drawing a bar on a terminal, or None when piped."""
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def show(fraction: float) -> bool:
        pct = int(fraction * 100)
        if pct != last[0]:
            last[0] = pct
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\r{label} [{bar:<25}] {pct:3d}%")
            if pct >= 100:
                sys.stderr.write("\n")
            sys.stderr.flush()
        return True

    return show


def _status(line: str) -> None:
    if sys.stderr.isatty():
        print(line, file=sys.stderr)


def cmd_run(a: argparse.Namespace) -> int:
    prompt = a.prompt if a.prompt is not None else sys.stdin.read()
    sampling = sampling_params(a, SamplingParams())
    files = cli_media.media_files(a)
    llm = _load_llm(a)
    out = sys.stdout
    with llm:
        try:
            prompt, media_kw = cli_media.run_prompt(llm, prompt, files)
            stream = llm.stream(prompt, sampling, **media_kw)
            for piece in stream:
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write("\n")
            return 130
        out.write("\n")
        out.flush()
        c = stream.completion
        if a.verbose_stats and c is not None:
            t = c.timings
            print(f"prompt: {c.usage.prompt_tokens} tokens ({c.usage.cached_tokens} cached), "
                  f"{t.prompt_tokens_per_second:.1f} t/s; generation: {t.generated_tokens} "
                  f"tokens, {t.generation_tokens_per_second:.1f} t/s"
                  + (f"; drafted {t.drafted_tokens}, accepted {t.accepted_tokens} "
                     f"({t.acceptance_rate:.1%}), {t.target_passes} target passes"
                     if t.drafted_tokens else ""), file=sys.stderr)
    return 0


def _load_llm(a: argparse.Namespace) -> LLM:
    add_rpc_servers(a)
    path = models.resolve(a.model, progress=_status)
    spec = from_args(SpeculativeParams, a)
    if spec.draft_model is not None:
        spec = spec.replace(draft_model=str(models.resolve(spec.draft_model, progress=_status)))
    return LLM(path, model_params=model_params(a), context_params=context_params(a),
               speculative=spec, progress=_progress_printer("loading model"),
               mmproj=getattr(a, "mmproj", None))


def cmd_chat(a: argparse.Namespace) -> int:
    sampling = sampling_params(a, SamplingParams(max_tokens=512))
    pending = cli_media.media_files(a)  # attached to the next user message
    llm = _load_llm(a)
    messages: list[dict[str, Any]] = []
    if a.system:
        messages.append({"role": "system", "content": a.system})
    interactive = sys.stdin.isatty()
    if interactive:
        print("llama-cffi chat: type a message; /bye or Ctrl-D to quit, Ctrl-C stops a reply.",
              file=sys.stderr)
    stop_now = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        stop_now.set()

    with llm:
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                print("\n(/bye to quit)", file=sys.stderr)
                continue
            text = line.strip()
            if text in ("/bye", "/exit", "/quit"):
                break
            if not text or cli_media.chat_command(text, pending):
                continue
            messages.append(cli_media.user_message(text, pending))
            pending = []
            stop_now.clear()
            previous = signal.signal(signal.SIGINT, on_sigint)
            try:
                stream = llm.chat_stream(messages, sampling, cancel=stop_now)
                for piece in stream:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            finally:
                signal.signal(signal.SIGINT, previous)
            reply = stream.completion.text if stream.completion else ""
            sys.stdout.write("\n")
            sys.stdout.flush()
            messages.append({"role": "assistant", "content": reply})
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    path = models.resolve(a.model, progress=_status)
    with Model(path, no_alloc=True, load_mode="none") as m:
        arch = m.architecture
        k_dim = int(m.meta(f"{arch}.attention.key_length") or m.n_embd // max(1, m.n_head))
        v_dim = int(m.meta(f"{arch}.attention.value_length") or k_dim)
        kv_per_token = m.n_layer * m.n_head_kv * (k_dim + v_dim) * 2  # K and V in f16
        print(f"file:          {path}")
        print(f"description:   {m.description}")
        print(f"architecture:  {m.architecture}")
        print(f"parameters:    {m.n_params:,}")
        print(f"weights:       {m.size / 2**20:.1f} MiB")
        print(f"layers:        {m.n_layer}  embedding: {m.n_embd}  heads: {m.n_head} "
              f"(kv {m.n_head_kv})  sliding window: {m.n_swa or '-'}")
        print(f"context:       trained {m.n_ctx_train}")
        print(f"KV cache f16:  {kv_per_token / 2**10:.1f} KiB per token, "
              f"{kv_per_token * a.ctx_size / 2**20:.1f} MiB at -c {a.ctx_size} (estimate, "
              "no sliding-window savings)")
        if m.is_moe:
            print(f"experts:       {m.n_expert}")
        template = m.chat_template()
        print("chat template: " + ("(none: llama.cpp's chatml is used)" if template is None
                                   else f"{len(template)} characters"))
        if a.verbose:
            if template:
                print(template)
            for key, value in m.metadata.items():
                if not key.startswith("tokenizer.ggml.") or key.endswith("model"):
                    print(f"  {key} = {value[:200]}")
    return 0


def cmd_pull(a: argparse.Namespace) -> int:
    for name in a.names:
        if name.startswith("hf://"):  # a GGUF from the Hugging Face Hub (objects/hub.py)
            try:
                repo, pattern = hub.parse_hf_url(name)
                print(hub.download(repo, pattern or "*.gguf"))
            except (ImportError, ValueError) as exc:
                print(f"llama-cffi: error: {exc}", file=sys.stderr)
                return 1
            continue
        if name not in models.REGISTRY:
            print(f"llama-cffi pull: error: invalid choice: {name!r} (choose from "
                  f"{', '.join(models.REGISTRY)}, or hf://ORG/REPO/FILE.gguf)", file=sys.stderr)
            return 2
        path = models.fetch(name, progress=lambda s: print(s, file=sys.stderr), force=a.force)
        print(path)
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    cached = {name: (path, size) for name, path, size in models.list_cached()}
    for name, model in models.REGISTRY.items():
        if name in cached:
            path, size = cached[name]
            print(f"{name:<14} {size / 2**20:8.1f} MiB  {path}")
        else:
            print(f"{name:<14} {'-':>8}      (not downloaded: llama-cffi pull {name})")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    return bench.main(a)


def cmd_system_info(a: argparse.Namespace) -> int:
    if a.cpu_variant:
        # read when the backends are loaded, which this command does first
        os.environ[ENV_CPU_VARIANT] = a.cpu_variant
    info = system_info()
    if a.cpu_variant and not info.cpu_variant:
        print(f"llama-cffi: --cpu-variant {a.cpu_variant}: this build has one CPU backend "
              "compiled for its machine, not variants (build with -DLLAMA_CFFI_PORTABLE=ON)",
              file=sys.stderr)
        return 2
    print(info)
    return 0


def cmd_rpc_server(a: argparse.Namespace) -> int:
    devices = [d.strip() for d in a.device.split(",")] if a.device else None
    print(f"llama-cffi: serving ggml RPC on {a.host}:{a.port}", file=sys.stderr, flush=True)
    rpc.serve(a.host, a.port, devices=devices, n_threads=a.threads, cache_dir=a.cache)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama-cffi",
        description="llama.cpp from Python: run models, fetch models, inspect the build.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate a continuation of a prompt, streamed",
                         description="Generate text after PROMPT (or stdin) and stream it.")
    run.add_argument("prompt", nargs="?", default=None, help="the prompt (default: read stdin)")
    run.add_argument("--verbose-stats", action="store_true",
                     help="print speeds (and speculative statistics) to stderr at the end")
    add_model_flags(run)
    add_context_flags(run)
    add_sampling_flags(run)
    add_speculative_flags(run)
    cli_media.add_media_flags(run)
    run.set_defaults(func=cmd_run)

    chat = sub.add_parser("chat", help="talk with a model, using its chat template",
                          description="Interactive multi-turn chat. /bye or Ctrl-D quits; "
                                      "Ctrl-C stops the current reply.")
    chat.add_argument("--system", default=None, help="system prompt")
    add_model_flags(chat)
    add_context_flags(chat)
    add_sampling_flags(chat)
    add_speculative_flags(chat)
    cli_media.add_media_flags(chat)
    chat.set_defaults(func=cmd_chat)

    info = sub.add_parser("info", help="model facts, chat template and memory estimate")
    info.add_argument("model", help="GGUF path or registry name")
    info.add_argument("-c", "--ctx-size", type=int, default=4096,
                      help="context size for the KV cache estimate")
    info.add_argument("-v", "--verbose", action="store_true", help="print the template and metadata")
    info.set_defaults(func=cmd_info)

    pull = sub.add_parser("pull", help="download registry or Hugging Face Hub models")
    pull.add_argument("names", nargs="+", metavar="NAME",
                      help=f"one of {', '.join(models.REGISTRY)}, or hf://ORG/REPO/FILE.gguf "
                           "(FILE may be a glob; split GGUFs come whole)")
    pull.add_argument("--force", action="store_true", help="download again even if cached")
    pull.set_defaults(func=cmd_pull)

    lst = sub.add_parser("list", help="registry models and whether they are cached")
    lst.set_defaults(func=cmd_list)

    rpcp = sub.add_parser("rpc-server", help="serve this machine's devices over ggml RPC",
                          description="Serve local devices to other processes/machines "
                                      "(as llama.cpp's ggml-rpc-server). Unauthenticated: "
                                      "bind to 127.0.0.1 or a trusted network only.")
    rpcp.add_argument("-H", "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    rpcp.add_argument("-p", "--port", type=int, default=50052, help="port (default 50052)")
    rpcp.add_argument("-d", "--device", default=None, help="comma-separated devices to serve")
    rpcp.add_argument("-t", "--threads", type=int, default=None, help="threads for the CPU device")
    rpcp.add_argument("-c", "--cache", default=None, help="directory to cache received tensors")
    rpcp.set_defaults(func=cmd_rpc_server)

    bn = sub.add_parser("bench", help="llama-bench's measurements through llama_cffi",
                        description="pp/tg tokens per second as llama-bench measures them, "
                                    "made through llama_cffi. Comma-separated values run "
                                    "every combination, as in llama-bench.")
    bn.add_argument("-m", "--model", default=models.DEFAULT_MODEL, help="model(s), comma-separated")
    bn.add_argument("-p", "--n-prompt", default="512", help="prompt sizes (default 512)")
    bn.add_argument("-n", "--n-gen", default="128", help="generation sizes (default 128)")
    bn.add_argument("-pg", "--n-pg", action="append", default=[], metavar="PP,TG",
                    help="a prompt,generation pair measured together (repeatable)")
    bn.add_argument("-r", "--repetitions", type=int, default=5, help="repetitions (default 5)")
    bn.add_argument("-t", "--threads", default=str(default_threads()), help="thread counts")
    bn.add_argument("-ngl", "--n-gpu-layers", default="99", help="GPU layers")
    bn.add_argument("-ctk", "--cache-type-k", default="f16", help="K cache types")
    bn.add_argument("-ctv", "--cache-type-v", default="f16", help="V cache types")
    bn.add_argument("-fa", "--flash-attn", default="auto", help="on, off or auto")
    bn.add_argument("-b", "--batch-size", default="2048", help="batch sizes (default 2048)")
    bn.add_argument("-ub", "--ubatch-size", default="512", help="micro-batch sizes (default 512)")
    bn.add_argument("-o", "--output", choices=["md", "json", "jsonl", "csv"], default="md",
                    help="output format (default md)")
    bn.set_defaults(func=cmd_bench)

    add_serve_parser(sub)

    sysinfo = sub.add_parser("system-info", help="llama.cpp commit, backends, devices")
    sysinfo.add_argument("--cpu-variant", default=None, metavar="LEVEL",
                         help="portable builds: load this CPU variant (x64, haswell, zen4 ...) "
                              "instead of the best one (as LLAMA_CFFI_CPU_VARIANT does)")
    sysinfo.set_defaults(func=cmd_system_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LlamaError as exc:
        print(f"llama-cffi: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
