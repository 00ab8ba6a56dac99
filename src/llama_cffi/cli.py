"""The ``llama-cffi`` command.

Subcommands: ``run`` (prompt in, continuation streamed out), ``pull`` (fetch
a registry model), ``list`` (cached models), ``system-info``. Flags use the
names of llama.cpp's own tools (``-m``, ``-n``, ``-c``, ``-ngl``, ``-ts``,
``--temp`` ...).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import models, sampling
from .errors import LlamaError


def _progress_printer(label: str) -> Any:
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


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (llama_model_params)")
    g.add_argument("-m", "--model", default=models.DEFAULT_MODEL,
                   help=f"GGUF path or registry name ({', '.join(models.REGISTRY)}); "
                        f"default {models.DEFAULT_MODEL}")
    g.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", type=int, default=None,
                   help="layers to store on GPU/other devices (negative: all)")
    g.add_argument("-sm", "--split-mode", choices=["none", "layer", "row", "tensor"],
                   default=None, help="how to split the model across devices")
    g.add_argument("-mg", "--main-gpu", type=int, default=None,
                   help="device for the whole model with --split-mode none")
    g.add_argument("-ts", "--tensor-split", default=None,
                   help="proportions per device, e.g. 3,1")
    g.add_argument("-dev", "--device", default=None,
                   help="comma-separated devices to offload to (see system-info)")
    g.add_argument("-ot", "--override-tensor", action="append", default=[],
                   metavar="PATTERN=BUFFER_TYPE", help="keep tensors matching PATTERN in "
                   "BUFFER_TYPE (e.g. '\\.ffn_.*_exps\\.=CPU'); repeatable, comma-separated")
    g.add_argument("-cmoe", "--cpu-moe", action="store_true",
                   help="keep all MoE expert weights in host memory")
    g.add_argument("-ncmoe", "--n-cpu-moe", type=int, default=0, metavar="N",
                   help="keep the MoE expert weights of the first N layers in host memory")
    g.add_argument("-ncffn", "--n-cpu-ffn", type=int, default=0, metavar="N",
                   help="keep the dense FFN weights of the first N layers in host memory")
    g.add_argument("--rpc", default=None, metavar="SERVERS",
                   help="comma-separated host:port of RPC servers to use as devices")
    g.add_argument("--override-kv", action="append", default=[], metavar="KEY=TYPE:VALUE",
                   help="override model metadata (TYPE: int, float, bool, str)")
    g.add_argument("--no-mmap", action="store_true", help="do not memory-map the model")
    g.add_argument("--mlock", action="store_true", help="keep the model in RAM")


def _add_context_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("context (llama_context_params)")
    g.add_argument("-c", "--ctx-size", type=int, default=4096,
                   help="context size in tokens, 0 = from model (default 4096)")
    g.add_argument("-b", "--batch-size", type=int, default=None, help="logical batch size")
    g.add_argument("-ub", "--ubatch-size", type=int, default=None, help="physical batch size")
    g.add_argument("-t", "--threads", type=int, default=None, help="generation threads")
    g.add_argument("-tb", "--threads-batch", type=int, default=None,
                   help="prompt-processing threads")
    g.add_argument("-fa", "--flash-attn", choices=["on", "off", "auto"], default=None,
                   help="Flash Attention")
    g.add_argument("-ctk", "--cache-type-k", default=None, help="KV cache type for K (f16, q8_0, ...)")
    g.add_argument("-ctv", "--cache-type-v", default=None, help="KV cache type for V")
    g.add_argument("--rope-scaling", choices=["none", "linear", "yarn", "longrope"], default=None,
                   help="RoPE frequency scaling")
    g.add_argument("--rope-freq-base", type=float, default=None, help="RoPE base frequency")
    g.add_argument("--rope-freq-scale", type=float, default=None, help="RoPE frequency scale")
    g.add_argument("--swa-full", action="store_true", default=None,
                   help="full-size KV cache for sliding-window attention")
    g.add_argument("-nkvo", "--no-kv-offload", action="store_true",
                   help="keep the KV cache in host memory")


def _add_speculative_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculative decoding")
    g.add_argument("-md", "--model-draft", default=None,
                   help="draft model (path or registry name) for draft-simple speculation")
    g.add_argument("-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft", type=int,
                   default=None, help="layers of the draft model on GPU/other devices")
    g.add_argument("-devd", "--device-draft", default=None, help="devices for the draft model")
    g.add_argument("--spec-type", choices=["draft-simple", "ngram-simple"], default=None,
                   help="speculative decoding kind (default: draft-simple with -md)")
    g.add_argument("--spec-draft-n-max", "--draft-max", "--draft", type=int, default=None,
                   help="most tokens drafted per step (default 3)")
    g.add_argument("--spec-draft-n-min", "--draft-min", type=int, default=0,
                   help="fewest drafted tokens worth verifying (default 0)")
    g.add_argument("--spec-draft-p-min", "--draft-p-min", type=float, default=0.0,
                   help="stop drafting below this top probability (default 0.0)")
    g.add_argument("-ctkd", "--cache-type-k-draft", default=None, help="draft KV cache type for K")
    g.add_argument("-ctvd", "--cache-type-v-draft", default=None, help="draft KV cache type for V")
    g.add_argument("--spec-ngram-simple-size-n", type=int, default=12,
                   help="n-gram length looked up for ngram-simple (default 12)")
    g.add_argument("--spec-ngram-simple-size-m", type=int, default=48,
                   help="tokens proposed by ngram-simple (default 48)")


def _speculative_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    if not a.model_draft and not a.spec_type:
        return {}
    kw: dict[str, Any] = {"speculative": a.spec_type,
                          "draft_n_max": a.spec_draft_n_max, "draft_n_min": a.spec_draft_n_min,
                          "draft_p_min": a.spec_draft_p_min,
                          "ngram_size_n": a.spec_ngram_simple_size_n,
                          "ngram_size_m": a.spec_ngram_simple_size_m}
    if a.model_draft:
        kw["draft_model"] = models.resolve(a.model_draft, progress=_status)
        params: dict[str, Any] = {}
        if a.gpu_layers_draft is not None:
            params["n_gpu_layers"] = a.gpu_layers_draft
        if a.device_draft:
            params["devices"] = [d.strip() for d in a.device_draft.split(",") if d.strip()]
        kw["draft_params"] = params
        dctx: dict[str, Any] = {}
        if a.cache_type_k_draft:
            dctx["type_k"] = a.cache_type_k_draft
        if a.cache_type_v_draft:
            dctx["type_v"] = a.cache_type_v_draft
        kw["draft_context_params"] = dctx
    return kw


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--temp", type=float, default=0.8, help="temperature; <= 0 is greedy (default 0.8)")
    g.add_argument("--top-k", type=int, default=40, help="top-k (default 40)")
    g.add_argument("--top-p", type=float, default=0.95, help="top-p (default 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, help="min-p (default 0.05)")
    g.add_argument("-s", "--seed", type=int, default=sampling.DEFAULT_SEED,
                   help="random seed (default: random)")
    g.add_argument("--typical", type=float, default=None, help="locally typical p (1.0 = off)")
    g.add_argument("--repeat-penalty", type=float, default=None, help="repetition penalty (1.0 = off)")
    g.add_argument("--repeat-last-n", type=int, default=None, help="tokens the penalties look at")
    g.add_argument("--presence-penalty", type=float, default=None)
    g.add_argument("--frequency-penalty", type=float, default=None)
    g.add_argument("--dry-multiplier", type=float, default=None, help="DRY penalty (0 = off)")
    g.add_argument("--dry-base", type=float, default=None)
    g.add_argument("--dry-allowed-length", type=int, default=None)
    g.add_argument("--xtc-probability", type=float, default=None)
    g.add_argument("--xtc-threshold", type=float, default=None)
    g.add_argument("--top-n-sigma", type=float, default=None)
    g.add_argument("--dynatemp-range", type=float, default=None)
    g.add_argument("--dynatemp-exp", type=float, default=None)
    g.add_argument("--mirostat", type=int, choices=[0, 1, 2], default=None)
    g.add_argument("--mirostat-lr", type=float, default=None, help="mirostat eta")
    g.add_argument("--mirostat-ent", type=float, default=None, help="mirostat tau")
    g.add_argument("--samplers", default=None,
                   help="sampler order, ';'-separated names or letters (e.g. 'kpmt')")
    g.add_argument("--grammar", default=None, help="GBNF grammar to constrain the output")
    g.add_argument("--grammar-file", default=None, help="file with a GBNF grammar")
    g.add_argument("-j", "--json-schema", default=None,
                   help="JSON schema the output must satisfy (inline JSON or @file)")


def _model_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if a.n_gpu_layers is not None:
        kw["n_gpu_layers"] = a.n_gpu_layers
    if a.split_mode:
        kw["split_mode"] = a.split_mode
    if a.main_gpu is not None:
        kw["main_gpu"] = a.main_gpu
    if a.tensor_split:
        kw["tensor_split"] = [float(x) for x in a.tensor_split.replace("/", ",").split(",")]
    if a.device:
        kw["devices"] = [d.strip() for d in a.device.split(",") if d.strip()]
    overrides: list[tuple[str, str]] = []
    for spec in a.override_tensor:
        for item in spec.split(","):
            pattern, sep, target = item.rpartition("=")
            if not sep or not pattern:
                raise SystemExit(f"llama-cffi: error: -ot expects PATTERN=BUFFER_TYPE, got {item!r}")
            overrides.append((pattern, target))
    if overrides:
        kw["tensor_overrides"] = overrides
    if a.cpu_moe:
        kw["cpu_moe"] = True
    if a.n_cpu_moe:
        kw["n_cpu_moe"] = a.n_cpu_moe
    if a.n_cpu_ffn:
        kw["n_cpu_ffn"] = a.n_cpu_ffn
    if a.override_kv:
        kw["kv_overrides"] = dict(_parse_override_kv(x) for x in a.override_kv)
    if a.no_mmap or a.mlock:
        kw["use_mmap"] = not a.no_mmap
        kw["use_mlock"] = a.mlock
    return kw


def _parse_override_kv(spec: str) -> tuple[str, Any]:
    key, sep, rest = spec.partition("=")
    kind, sep2, value = rest.partition(":")
    if not sep or not sep2:
        raise SystemExit(f"llama-cffi: error: --override-kv expects KEY=TYPE:VALUE, got {spec!r}")
    conv = {"int": int, "float": float, "str": str,
            "bool": lambda v: v.lower() in ("1", "true", "yes", "on")}
    if kind not in conv:
        raise SystemExit("llama-cffi: error: --override-kv type must be int, float, bool or str")
    return key, conv[kind](value)


def _add_rpc_servers(a: argparse.Namespace) -> None:
    if getattr(a, "rpc", None):
        from . import rpc

        for endpoint in a.rpc.split(","):
            rpc.add_server(endpoint.strip())


def _context_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"n_ctx": a.ctx_size}
    for key, value in (("n_batch", a.batch_size), ("n_ubatch", a.ubatch_size),
                       ("n_threads", a.threads), ("n_threads_batch", a.threads_batch),
                       ("flash_attn", a.flash_attn), ("type_k", a.cache_type_k),
                       ("type_v", a.cache_type_v), ("rope_scaling", a.rope_scaling),
                       ("rope_freq_base", a.rope_freq_base),
                       ("rope_freq_scale", a.rope_freq_scale), ("swa_full", a.swa_full)):
        if value is not None:
            kw[key] = value
    if a.no_kv_offload:
        kw["offload_kqv"] = False
    return kw


def _sampling_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    from .grammar import Grammar

    kw: dict[str, Any] = {"temperature": a.temp, "top_k": a.top_k, "top_p": a.top_p,
                          "min_p": a.min_p, "seed": a.seed}
    for key, value in (("typical_p", a.typical), ("repeat_penalty", a.repeat_penalty),
                       ("repeat_last_n", a.repeat_last_n),
                       ("presence_penalty", a.presence_penalty),
                       ("frequency_penalty", a.frequency_penalty),
                       ("dry_multiplier", a.dry_multiplier), ("dry_base", a.dry_base),
                       ("dry_allowed_length", a.dry_allowed_length),
                       ("xtc_probability", a.xtc_probability),
                       ("xtc_threshold", a.xtc_threshold), ("top_n_sigma", a.top_n_sigma),
                       ("dynatemp_range", a.dynatemp_range),
                       ("dynatemp_exponent", a.dynatemp_exp), ("mirostat", a.mirostat),
                       ("mirostat_eta", a.mirostat_lr), ("mirostat_tau", a.mirostat_ent),
                       ("samplers", a.samplers)):
        if value is not None:
            kw[key] = value
    given = [x for x in (a.grammar, a.grammar_file, a.json_schema) if x]
    if len(given) > 1:
        raise SystemExit("llama-cffi: error: give only one of --grammar, --grammar-file, "
                         "--json-schema")
    if a.grammar:
        kw["grammar"] = Grammar(a.grammar)
    elif a.grammar_file:
        kw["grammar"] = Grammar.from_file(a.grammar_file)
    elif a.json_schema:
        text = a.json_schema
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        kw["grammar"] = Grammar.from_json_schema(text)
    return kw


def cmd_run(a: argparse.Namespace) -> int:
    prompt = a.prompt if a.prompt is not None else sys.stdin.read()
    llm = _load_llm(a)
    out = sys.stdout
    with llm:
        try:
            stream = llm.stream(prompt, max_tokens=a.n_predict, **_sampling_kwargs(a))
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


def _load_llm(a: argparse.Namespace) -> Any:
    from .llm import LLM

    _add_rpc_servers(a)
    path = models.resolve(a.model, progress=_status)
    return LLM(path, progress=_progress_printer("loading model"), **_model_kwargs(a),
               **_context_kwargs(a), **_speculative_kwargs(a))


def cmd_chat(a: argparse.Namespace) -> int:
    import signal
    import threading

    llm = _load_llm(a)
    sampling = _sampling_kwargs(a)
    messages: list[dict[str, str]] = []
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
            if not text:
                continue
            messages.append({"role": "user", "content": text})
            stop_now.clear()
            previous = signal.signal(signal.SIGINT, on_sigint)
            try:
                stream = llm.chat_stream(messages, max_tokens=a.n_predict, cancel=stop_now,
                                         **sampling)
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
    from .model import Model

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
    from . import bench

    return bench.main(a)


def cmd_system_info(a: argparse.Namespace) -> int:
    from .system import system_info

    print(system_info())
    return 0


def cmd_rpc_server(a: argparse.Namespace) -> int:
    from . import rpc

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
    run.add_argument("-n", "--n-predict", type=int, default=-1,
                     help="tokens to generate, -1 = until end of generation or full context")
    run.add_argument("--verbose-stats", action="store_true",
                     help="print speeds (and speculative statistics) to stderr at the end")
    _add_model_flags(run)
    _add_context_flags(run)
    _add_sampling_flags(run)
    _add_speculative_flags(run)
    run.set_defaults(func=cmd_run)

    chat = sub.add_parser("chat", help="talk with a model, using its chat template",
                          description="Interactive multi-turn chat. /bye or Ctrl-D quits; "
                                      "Ctrl-C stops the current reply.")
    chat.add_argument("--system", default=None, help="system prompt")
    chat.add_argument("-n", "--n-predict", type=int, default=512,
                      help="most tokens per reply (default 512)")
    _add_model_flags(chat)
    _add_context_flags(chat)
    _add_sampling_flags(chat)
    _add_speculative_flags(chat)
    chat.set_defaults(func=cmd_chat)

    info = sub.add_parser("info", help="model facts, chat template and memory estimate")
    info.add_argument("model", help="GGUF path or registry name")
    info.add_argument("-c", "--ctx-size", type=int, default=4096,
                      help="context size for the KV cache estimate")
    info.add_argument("-v", "--verbose", action="store_true", help="print the template and metadata")
    info.set_defaults(func=cmd_info)

    pull = sub.add_parser("pull", help="download registry models into the cache")
    pull.add_argument("names", nargs="+", choices=list(models.REGISTRY), metavar="NAME",
                      help=f"one of {', '.join(models.REGISTRY)}")
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

    from .context import default_threads

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

    sysinfo = sub.add_parser("system-info", help="llama.cpp commit, backends, devices")
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
