"""llguidance inside the engine's C runs (issue 23): constrained requests (JSON
schema, regex, Lark, forced tool calls) are masked and advanced in C
(``cdef/llg.h``, ``cdef/run.h``) with the same tokens as the per-step path,
valid output on SmolLM2 and Gemma 3, mixed with unconstrained requests in
four slots, a grammar error in the middle of a run ending only its request,
and the server's forced tool call running in C."""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

import llama_cffi as lc
from llama_cffi.errors import GrammarError
from llama_cffi.objects.constraints import constraint_for

from .server_util import Server, ours
from .test_engine_runs import both_ways
from .test_llguidance import PERSON, SCHEMAS, WEATHER

pytestmark = pytest.mark.skipif(not lc.objects.constraints.available(),
                                reason="the llguidance package is not installed")

ASK = "Describe a person as JSON: "
JSON_CASES = ["person", "nested", "enum_anyof"]


def test_json_schemas_run_in_c_with_the_per_step_tokens(llm4: lc.LLM) -> None:
    """Greedy and seeded sampling, one schema per slot, the same tokens both ways."""
    reqs = [{"prompt": ASK, "json_schema": SCHEMAS[name], "max_tokens": 100,
             "temperature": t, "seed": 7, "grammar_engine": "llguidance"}
            for name in JSON_CASES for t in (0.0, 0.9)][:4]
    reqs[3] = {**reqs[3], "json_schema": SCHEMAS["enum_anyof"]}
    done = both_ways(llm4, reqs)
    for r, c in zip(reqs, done):
        assert c.finish_reason in ("stop", "grammar"), c.text
        jsonschema.validate(json.loads(c.text), r["json_schema"])


def test_mixed_constrained_and_unconstrained_slots(llm4: lc.LLM) -> None:
    reqs: list[dict[str, Any]] = [
        {"prompt": ASK, "json_schema": PERSON, "max_tokens": 80, "temperature": 0},
        {"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0},
        {"prompt": ASK, "json_schema": SCHEMAS["nested"], "max_tokens": 100,
         "temperature": 0.8, "seed": 11},
        {"prompt": "The capital of France is", "max_tokens": 30, "temperature": 0.7,
         "seed": 2},
    ]
    done = both_ways(llm4, reqs)
    for r, c in zip(reqs, done):
        if "json_schema" in r:
            jsonschema.validate(json.loads(c.text), r["json_schema"])
        else:
            assert c.usage.completion_tokens > 0


def test_regex_and_lark_run_in_c(llm4: lc.LLM) -> None:
    pattern = r" [12][0-9]{3}\. (yes|no)/ok"
    lark = 'start: " " answer "!"\nanswer: "yes" | "no" | /[0-9]{2}/'
    reqs: list[dict[str, Any]] = [
        {"prompt": "The year is", "grammar": lc.Grammar.regex(pattern), "max_tokens": 20,
         "temperature": 0.7, "seed": 5},
        {"prompt": "Answer:", "grammar": lc.Grammar.lark(lark), "max_tokens": 10,
         "temperature": 0},
        {"prompt": "Letters:", "grammar": 'root ::= "(" [a-c]{2,3} ")"', "max_tokens": 10,
         "temperature": 0.8, "seed": 1},
    ]
    a, b, c = both_ways(llm4, reqs)
    assert re.fullmatch(pattern, a.text), a.text
    assert re.fullmatch(r" (yes|no|[0-9]{2})!", b.text), b.text
    assert re.fullmatch(r"\([a-c]{2,3}\)", c.text), c.text


def test_a_grammar_error_mid_run_ends_only_its_request(smollm2_path: Path) -> None:
    """A matcher whose mask computation fails (llguidance's lexer limit, 1): the
    model's own tokens pass while the grammar takes them, then the first mask
    fails inside the run; that request ends with a GrammarError, the engine
    and its other slot go on, and the KV cache matches the slot's record."""
    text = r"[a-z ]{0,60}!"  # the model's own words, until its first punctuation
    with lc.LLM(smollm2_path, n_ctx=2 * 512, n_parallel=2, n_threads=2) as llm:
        model, vocab = llm.model, llm.model.vocab
        prompt = vocab.tokenize("The cat sat on the mat and")
        results: dict[int, tuple[str, int]] = {}
        for steps in (0, 64):
            llm.engine.run_steps = steps
            runs = llm.metrics.run_decode_calls
            chain = lc.SamplerChain.from_params(model, temperature=0)
            chain._constraint = constraint_for(vocab, "regex", text, step_lexer_fuel=1)
            pieces: list[str] = []
            bad = llm.engine.submit(prompt, lc.SamplingParams(max_tokens=40), sampler=chain)
            other = llm.submit("Once upon a time", max_tokens=30, temperature=0)
            with pytest.raises(GrammarError, match="too many expressions") as info:
                for piece in bad.pieces():
                    pieces.append(piece)
            assert re.fullmatch(r"[a-z ]+", "".join(pieces))  # tokens came first
            assert other.result(timeout=120).usage.completion_tokens == 30
            results[steps] = (str(info.value), llm.metrics.run_decode_calls - runs)
            kv = llm.engine.call(lambda: [(len(s.cache), llm.engine.ctx.seq_pos_max(s.seq_id))
                                          for s in llm.engine.slots])
            assert all(pos == n - 1 for n, pos in kv)
        assert results[0][1] == 0 and results[64][1] > 0
        # the engine still serves a constrained request afterwards
        r = llm.complete(ASK, json_schema=PERSON, max_tokens=60, temperature=0)
        jsonschema.validate(json.loads(r.text), PERSON)


def test_a_closed_constraint_keeps_its_chain_out_of_runs(smollm2_path: Path) -> None:
    from llama_cffi.objects.chain import chain_for
    from llama_cffi.objects.run import GenerationRun

    with lc.Model(smollm2_path) as model:
        chain = chain_for(model, lc.SamplingParams(json_schema=PERSON, temperature=0))
        assert chain._constraint is not None and GenerationRun.can_run(chain)
        constraint = chain._constraint
        chain.close()  # closes its constraint: freed once
        assert constraint.closed and not GenerationRun.can_run(chain)
        constraint.close()  # idempotent
        lost = constraint_for(model.vocab, "regex", "a+")
        with pytest.warns(ResourceWarning, match="unclosed GuidanceConstraint"):
            del lost
            gc.collect()


@pytest.fixture(scope="module")
def server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("llg-runs-server") / "server.log"
    with ours(["-m", str(smollm2_path), "-c", "2048", "-np", "2", "-t", "2"], log) as s:
        yield s


def _runs(server: Server) -> float:
    status, body = server.get("/metrics")
    assert status == 200
    text = body if isinstance(body, str) else json.dumps(body)
    m = re.search(r"^llama_cffi_run_decode_calls(?:_total)?(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    assert m, text[:500]
    return float(m.group(1))


@pytest.mark.slow
def test_server_forced_tool_call_runs_in_c(server: Server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                           timeout=300)
    before = _runs(server)
    with client:
        r = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER], tool_choice="required", max_tokens=80,  # type: ignore[list-item]
            temperature=0)
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    jsonschema.validate(json.loads(calls[0].function.arguments),  # type: ignore[union-attr]
                        WEATHER["function"]["parameters"])  # type: ignore[index]
    assert _runs(server) > before
