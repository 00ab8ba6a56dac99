"""Parameter objects: validation, keyword routing, and the command line derived from them."""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest

import llama_cffi as lc
from llama_cffi.apps.cli import build_parser
from llama_cffi.objects.params import split_kwargs
from llama_cffi.objects.params.fields import add_flags, flag_of, from_args, to_flags

# Every field set to a value other than its default (and not None), so that a
# lost or mis-parsed flag changes the result.
CHANGED = {
    lc.ModelParams: dict(
        n_gpu_layers=12, split_mode="row", main_gpu=1, tensor_split=(3.0, 1.5),
        devices=("RPC0", "RPC1"), tensor_overrides=((r"\.ffn_up_exps\.", "CPU"),
                                                    (r"blk\.1\.", "RPC0")),
        cpu_moe=True, n_cpu_moe=3, n_cpu_ffn=2,
        kv_overrides=(("llama.context_length", 1024), ("general.name", "x y"),
                      ("tokenizer.ggml.add_bos_token", False), ("llama.rope.scale", 0.5)),
        load_mode="mmap+mlock", vocab_only=True, check_tensors=True, use_extra_bufts=False,
        no_host=True, no_alloc=True),
    lc.ContextParams: dict(
        n_ctx=2048, n_batch=256, n_ubatch=128, n_seq_max=4, n_threads=3, n_threads_batch=5,
        flash_attn="on", type_k="q8_0", type_v="q4_0", rope_scaling="yarn",
        rope_freq_base=20000.0, rope_freq_scale=0.5, yarn_ext_factor=0.25,
        yarn_attn_factor=1.5, yarn_beta_fast=16.0, yarn_beta_slow=2.0, yarn_orig_ctx=1024,
        embeddings=True, pooling="mean", attention="non_causal", offload_kqv=False,
        op_offload=False, swa_full=True, kv_unified=False, no_perf=False),
    lc.SamplingParams: dict(
        max_tokens=77, stop=("Q:", "\n\n"), ignore_eos=True, logprobs=3, temperature=0.3,
        top_k=7, top_p=0.5, min_p=0.2, typical_p=0.9, xtc_probability=0.4, xtc_threshold=0.2,
        top_n_sigma=1.5, repeat_penalty=1.1, repeat_last_n=32, frequency_penalty=0.25,
        presence_penalty=0.5, dry_multiplier=0.8, dry_base=2.0, dry_allowed_length=3,
        dry_penalty_last_n=16, dry_sequence_breakers=("\n", "."), dynatemp_range=0.5,
        dynatemp_exponent=2.0, mirostat=2, mirostat_tau=4.0, mirostat_eta=0.2,
        adaptive_target=0.5, adaptive_decay=0.8, seed=1234, min_keep=2,
        logit_bias=((15, 1.5), (16, -math.inf)), samplers=("top_k", "temperature"),
        grammar='root ::= "yes" | "no"', json_schema=None, backend_sampling=True,
        grammar_engine="llama"),
    lc.SpeculativeParams: dict(
        spec_type="ngram-simple", draft_model="draft.gguf", draft_n_max=5, draft_n_min=1,
        draft_p_min=0.5, draft_n_gpu_layers=9, draft_devices=("RPC1",), draft_type_k="q8_0",
        draft_type_v="f16", ngram_size_n=8, ngram_size_m=16),
}


def _parser(cls: type) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_flags(p, cls)
    return p


@pytest.mark.parametrize("cls", list(CHANGED), ids=lambda c: c.__name__)
def test_every_field_has_a_flag_and_a_test_value(cls: type) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(CHANGED[cls]) | ({"json_schema"} if cls is lc.SamplingParams else set()) == names
    defaults = cls()
    for f in dataclasses.fields(cls):
        flag = flag_of(f)  # raises for a field without a flag
        assert flag.flags and flag.help
        assert f.name in (cls.__doc__ or ""), f"{f.name} missing from the docstring"
        if f.name in CHANGED[cls] and f.name != "json_schema":
            assert getattr(cls(**{f.name: CHANGED[cls][f.name]}), f.name) != \
                getattr(defaults, f.name), f"{f.name}: the test value equals the default"


@pytest.mark.parametrize("cls", list(CHANGED), ids=lambda c: c.__name__)
def test_flags_round_trip(cls: type) -> None:
    params = cls(**CHANGED[cls])
    argv = to_flags(params)
    back = from_args(cls, _parser(cls).parse_args(argv))
    assert back == params, (argv, back)
    assert to_flags(back) == argv


def test_json_schema_round_trips_separately() -> None:
    # grammar and json_schema exclude each other, so the schema gets its own round trip
    params = lc.SamplingParams(json_schema={"type": "object", "properties": {"a": {"type": "integer"}}})
    argv = to_flags(params)
    assert argv[0] == "-j"
    assert from_args(lc.SamplingParams, _parser(lc.SamplingParams).parse_args(argv)) == params


def test_defaults_give_no_flags_and_parse_back_to_defaults() -> None:
    for cls in CHANGED:
        assert to_flags(cls()) == []
        assert from_args(cls, _parser(cls).parse_args([])) == cls()


def test_the_cli_accepts_every_flag_of_every_params_class() -> None:
    parser = build_parser()
    argv = ["run", "hi"]
    for cls in CHANGED:
        argv += to_flags(cls(**CHANGED[cls]))
    args = parser.parse_args(argv)
    for cls in CHANGED:
        assert from_args(cls, args) == cls(**CHANGED[cls])


def test_llama_cpp_spellings_are_accepted() -> None:
    args = _parser(lc.ModelParams).parse_args(
        ["--gpu-layers", "5", "-ts", "3/1", "-ot", "a=CPU,b=RPC0", "-nr"])
    mp = from_args(lc.ModelParams, args)
    assert (mp.n_gpu_layers, mp.tensor_split) == (5, (3.0, 1.0))
    assert mp.tensor_overrides == (("a", "CPU"), ("b", "RPC0")) and mp.use_extra_bufts is False
    sp = from_args(lc.SamplingParams, _parser(lc.SamplingParams).parse_args(
        ["--temperature", "0", "--sampling-seq", "kpt", "-l", "15043+1", "--typical-p", "0.5"]))
    assert sp.temperature == 0 and sp.samplers == ("top_k", "top_p", "temperature")
    assert sp.logit_bias == ((15043, 1.0),) and sp.typical_p == 0.5
    cp = from_args(lc.ContextParams, _parser(lc.ContextParams).parse_args(["-nkvo", "-fa", "off"]))
    assert cp.offload_kqv is False and cp.flash_attn == lc.FlashAttn.OFF


@pytest.mark.parametrize(("cls", "kwargs", "exc", "words"), [
    (lc.ModelParams, {"n_gpu_layers": "all"}, TypeError, "n_gpu_layers"),
    (lc.ModelParams, {"split_mode": "diagonal"}, ValueError, "split_mode"),
    (lc.ModelParams, {"tensor_split": [1, -1]}, ValueError, "tensor_split"),
    (lc.ModelParams, {"tensor_overrides": {"(": "CPU"}}, ValueError, "tensor_overrides"),
    (lc.ModelParams, {"kv_overrides": {"k": [1]}}, TypeError, "kv_overrides"),
    (lc.ModelParams, {"n_cpu_moe": -1}, ValueError, "n_cpu_moe"),
    (lc.ModelParams, {"load_mode": "none", "use_mmap": True}, ValueError, "load_mode"),
    (lc.ContextParams, {"n_ctx": -5}, ValueError, "n_ctx"),
    (lc.ContextParams, {"n_batch": 0}, ValueError, "n_batch"),
    (lc.ContextParams, {"type_k": "q3_x"}, ValueError, "type_k"),
    (lc.ContextParams, {"type_v": "q8_0", "flash_attn": "off"}, ValueError, "Flash Attention"),
    (lc.ContextParams, {"attention": "sideways"}, ValueError, "attention"),
    (lc.ContextParams, {"embeddings": "yes"}, TypeError, "embeddings"),
    (lc.SamplingParams, {"top_p": 1.5}, ValueError, "top_p"),
    (lc.SamplingParams, {"temperature": float("nan")}, ValueError, "temperature"),
    (lc.SamplingParams, {"mirostat": 3}, ValueError, "mirostat"),
    (lc.SamplingParams, {"repeat_penalty": 0}, ValueError, "repeat_penalty"),
    (lc.SamplingParams, {"samplers": "top_k;magic"}, ValueError, "magic"),
    (lc.SamplingParams, {"stop": [1, 2]}, TypeError, "stop"),
    (lc.SamplingParams, {"max_tokens": -2}, ValueError, "max_tokens"),
    (lc.SamplingParams, {"json_schema": "{not json"}, ValueError, "json_schema"),
    (lc.SamplingParams, {"grammar": "root ::= x", "json_schema": {}}, ValueError, "either"),
    (lc.SamplingParams, {"tempurature": 0.5}, TypeError, "tempurature"),
    (lc.SpeculativeParams, {"spec_type": "eagle-9"}, ValueError, "speculative type"),
    (lc.SpeculativeParams, {"draft_n_max": 0}, ValueError, "draft_n_max"),
])
def test_bad_values_raise_naming_the_field(cls: type, kwargs: dict[str, object],
                                           exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words):
        cls.from_kwargs(None, **kwargs)


def test_a_single_stop_string_is_one_stop() -> None:
    assert lc.SamplingParams(stop="Q:").stop == ("Q:",)


def test_json_schema_true_means_an_object() -> None:
    assert lc.SamplingParams(json_schema=True).json_schema == {"type": "object"}


def test_aliases_and_replace() -> None:
    sp = lc.SamplingParams().replace(temp=0.1, n_predict=5, penalty_repeat=1.2)
    assert (sp.temperature, sp.max_tokens, sp.repeat_penalty) == (0.1, 5, 1.2)
    mp = lc.ModelParams.from_kwargs(None, use_mmap=False)
    assert mp.load_mode == lc.LoadMode.NONE
    with pytest.raises(dataclasses.FrozenInstanceError):
        sp.temperature = 1.0  # type: ignore[misc]


def test_llm_keywords_are_routed_to_their_params_class() -> None:
    model, ctx, spec, sampling = split_kwargs(
        {"n_gpu_layers": 1, "use_mlock": True, "n_ctx": 64, "type_k": "q8_0",
         "draft_n_max": 4, "temperature": 0.0, "stop": "x"})
    assert model == {"n_gpu_layers": 1, "use_mlock": True}
    assert ctx == {"n_ctx": 64, "type_k": "q8_0"}
    assert spec == {"draft_n_max": 4} and sampling == {"temperature": 0.0, "stop": "x"}
    with pytest.raises(TypeError, match="n_gpu_layerz"):
        split_kwargs({"n_gpu_layerz": 1})


def test_no_public_signature_takes_more_than_15_parameters() -> None:
    import inspect

    too_many = []
    params_classes = tuple(CHANGED)  # their generated __init__ is the list of settings itself
    names = [(n, getattr(lc, n)) for n in lc.__all__] + \
        [(f"sampling.{n}", getattr(lc.sampling, n)) for n in dir(lc.sampling)
         if not n.startswith("_")]
    for name, obj in names:
        if isinstance(obj, type) and issubclass(obj, params_classes):
            continue
        targets = [obj] if callable(obj) else []
        if inspect.isclass(obj):
            targets = [getattr(obj, m) for m in dir(obj)
                       if not m.startswith("_") or m == "__init__"]
            targets = [t for t in targets if inspect.isfunction(t) or inspect.ismethod(t)]
        for t in targets:
            try:
                n = len(inspect.signature(t).parameters)
            except (TypeError, ValueError):
                continue
            if n > 16:  # 15 plus self
                too_many.append(f"{name}.{getattr(t, '__name__', t)}: {n}")
    assert not too_many, too_many
