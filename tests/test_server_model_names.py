"""Which model answers a request that names a model the server does not know:
with one model from the command line, that model (as llama-server does, so
applications that hard-code a name work); with a models file, a 404."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from .server_util import ours

pytestmark = pytest.mark.slow


def test_single_model_answers_any_name(smollm2_path: Path, tmp_path: Path) -> None:
    import ollama

    question = [{"role": "user", "content": "What is the capital of France?"}]
    with ours(["-m", str(smollm2_path), "-a", "smol", "-c", "1024", "-np", "1", "-t", "2"],
              tmp_path / "one.log") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                               timeout=120)
        own = client.chat.completions.create(model="smol", messages=question,
                                             max_tokens=8, temperature=0)
        for name in ("gpt-4o-mini", "llama3.2"):
            other = client.chat.completions.create(model=name, messages=question,
                                                   max_tokens=8, temperature=0)
            assert other.choices[0].message.content == own.choices[0].message.content
        assert client.models.retrieve("gpt-4o-mini").id == "smol"
        reply = ollama.Client(host=server.url, timeout=120).chat(
            model="llama3.2", messages=question, options={"temperature": 0, "num_predict": 8})
        assert reply.message.content == own.choices[0].message.content
        client.close()
        log = server.output()
    # the substitution is logged once per name
    assert log.count("'gpt-4o-mini' are answered by 'smol'") == 1, log


def test_models_file_keeps_unknown_names_404(smollm2_path: Path, tmp_path: Path) -> None:
    import ollama

    config = tmp_path / "models.toml"
    config.write_text(f'[models.smol]\nmodel = "{smollm2_path}"\nargs = "-c 512 -np 1 -t 2"\n')
    with ours(["--config", str(config)], tmp_path / "file.log") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                               timeout=120)
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="gpt-4o-mini", max_tokens=4,
                                           messages=[{"role": "user", "content": "x"}])
        assert info.value.code == "model_not_found"
        client.close()
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=server.url, timeout=60).chat(
                model="llama3.2", messages=[{"role": "user", "content": "x"}])
        assert refused.value.status_code == 404
