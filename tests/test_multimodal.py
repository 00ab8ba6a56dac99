"""Images through libmtmd: a tiny random projector (tests/mmproj_synthetic.py)
for SmolLM2-135M, compared with llama.cpp's own llama-mtmd-cli."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi.errors import MediaError, MultimodalError, ProjectorLoadError
from llama_cffi.objects.multimodal import Bitmap, MultimodalProjector

from .mmproj_synthetic import N_PATCHES, make_image, png_bytes, write_mmproj

PROMPT = "What is in this picture?"


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mm")
    write_mmproj(d / "mmproj.gguf", 576)
    write_mmproj(d / "mmproj-wrong.gguf", 320)
    (d / "a.png").write_bytes(png_bytes(make_image(0)))
    (d / "b.png").write_bytes(png_bytes(make_image(1)))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return d


@pytest.fixture(scope="module")
def mm_llm(smollm2_path: Path, media_dir: Path):  # type: ignore[no-untyped-def]
    with lc.LLM(smollm2_path, n_ctx=1024, mmproj=media_dir / "mmproj.gguf") as llm:
        yield llm


def image_message(url: str, text: str = PROMPT) -> dict[str, object]:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": text}]}


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_projector_facts_and_chunks(smollm2: lc.Model, media_dir: Path) -> None:
    with MultimodalProjector(smollm2, media_dir / "mmproj.gguf", warmup=False) as proj:
        assert proj.supports_vision and not proj.supports_audio
        assert proj.audio_sample_rate == -1 and not proj.uses_mrope
        assert proj.marker.startswith("<__media_")
        with proj.tokenize(f"Look: {proj.marker} now describe.",
                           [media_dir / "a.png"]) as prompt:
            kinds = [c.kind for c in prompt.chunks]
            assert kinds == ["text", "image", "text"]
            assert prompt.chunks[1].n_tokens == N_PATCHES == prompt.chunks[1].n_pos
            # the text chunks are the model's own tokenization of the text around the marker
            assert list(prompt.chunks[0].tokens) == smollm2.vocab.tokenize("Look: ", add_special=True,
                                                                          parse_special=True)
            assert list(prompt.chunks[2].tokens) == smollm2.vocab.tokenize(
                " now describe.", add_special=False, parse_special=True)
            embd = proj.encode(prompt, 1)
            assert embd.shape == (N_PATCHES, 576) and np.isfinite(embd).all()
            assert proj.encode(prompt, 1) is embd and proj.n_encoded == 1  # cached


def test_bitmaps_from_array_file_and_bytes(smollm2: lc.Model, media_dir: Path) -> None:
    pixels = make_image(0)
    with MultimodalProjector(smollm2, media_dir / "mmproj.gguf", warmup=False) as proj:
        with Bitmap.from_array(pixels) as a, proj.load(media_dir / "a.png") as f, \
                proj.load((media_dir / "a.png").read_bytes()) as b:
            assert (a.width, a.height, a.n_bytes) == (40, 40, 40 * 40 * 3)
            assert (f.width, f.height) == (40, 40) and not f.is_audio
            assert f.id == b.id  # the SHA-256 of the file's bytes
            ctx_embd = []
            for bm in (a, f):
                with proj.tokenize(f"{proj.marker}x", [bm]) as p:
                    ctx_embd.append(proj.encode(p, 0).copy())
            # the PNG decodes to the same pixels as the array: same embeddings
            np.testing.assert_allclose(ctx_embd[0], ctx_embd[1], rtol=1e-5, atol=1e-6)
        with Bitmap.from_audio(np.zeros(1600, dtype=np.float32)) as audio:
            assert audio.is_audio
            with pytest.raises(MediaError, match="no audio encoder"):
                proj.tokenize(f"{proj.marker}x", [audio]).close()


def test_evaluate_into_a_context(mm_llm: lc.LLM, media_dir: Path) -> None:
    proj = mm_llm.projector
    assert proj is not None
    logits = []
    with mm_llm.model.context(n_ctx=256, n_batch=8) as ctx:
        for name in ("a.png", "b.png", "a.png"):
            ctx.clear()
            with proj.tokenize(f"Look: {proj.marker} describe it.",
                               [media_dir / name]) as prompt:
                # text in batches of 8, the 16 image embeddings in two batches
                n_past = proj.evaluate(ctx, prompt)
                assert n_past == prompt.n_pos == ctx.seq_pos_max(0) + 1
            logits.append(ctx.logits())
    np.testing.assert_array_equal(logits[0], logits[2])  # deterministic
    assert np.abs(logits[0] - logits[1]).max() > 1e-3  # the image reaches the model
    # through the engine: the replies differ with the image
    replies = [mm_llm.chat([image_message(str(media_dir / name))], max_tokens=10,
                           temperature=0).text for name in ("a.png", "b.png")]
    assert replies[0] != replies[1]


def _cli(tools_dir: Path, model: Path, media_dir: Path, n: int) -> str:
    proc = subprocess.run(
        [str(tools_dir / "llama-mtmd-cli"), "-m", str(model), "--mmproj",
         str(media_dir / "mmproj.gguf"), "--image", str(media_dir / "a.png"), "-p", PROMPT,
         "-n", str(n), "--temp", "0", "--jinja", "-c", "1024", "-t", "2"],
        capture_output=True, timeout=300, env={**os.environ, "LLAMA_LOG_COLORS": "0"})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode()


@pytest.mark.tools
def test_greedy_output_equals_llama_mtmd_cli(mm_llm: lc.LLM, smollm2_path: Path,
                                             media_dir: Path, tools_dir: Path) -> None:
    n = 24
    ours = mm_llm.chat([image_message(data_url(media_dir / "a.png"))], max_tokens=n,
                       temperature=0)
    out = _cli(tools_dir, smollm2_path, media_dir, n)
    # llama-mtmd-cli prints "\n" after the prompt, the reply, "\n" if it ended on
    # end of generation, and "\n\n" at exit
    tail = "\n\n\n" if ours.finish_reason == "stop" else "\n\n"
    assert out.startswith("\n") and out.endswith(tail), repr(out)
    theirs = out[1:-len(tail)]
    assert ours.text == theirs
    vocab = mm_llm.vocab
    assert ours.tokens == vocab.tokenize(theirs, add_special=False, parse_special=True) or \
        vocab.detokenize(ours.tokens) == theirs


def test_image_is_encoded_once_across_two_turns(smollm2_path: Path, media_dir: Path) -> None:
    with lc.LLM(smollm2_path, n_ctx=1024, mmproj=media_dir / "mmproj.gguf") as llm:
        proj = llm.projector
        assert proj is not None
        msgs: list[dict[str, object]] = [image_message(data_url(media_dir / "a.png"))]
        first = llm.chat(msgs, max_tokens=6, temperature=0)
        assert proj.n_encoded == 1
        msgs += [{"role": "assistant", "content": first.text},
                 {"role": "user", "content": "And what colour is it?"}]
        second = llm.chat(msgs, max_tokens=6, temperature=0)
        assert proj.n_encoded == 1  # the slot's KV (image included) was reused
        assert second.usage.cached_tokens > N_PATCHES
        # another slot state: the KV is gone, the encoded image comes from the cache
        llm.engine.call(lambda: llm.ctx.clear())
        third = llm.chat(msgs, max_tokens=6, temperature=0)
        assert proj.n_encoded == 1 and third.text == second.text


def test_stream_with_an_image(mm_llm: lc.LLM, media_dir: Path) -> None:
    stream = mm_llm.chat_stream([image_message(str(media_dir / "a.png"))], max_tokens=6,
                                temperature=0)
    text = "".join(stream)
    whole = mm_llm.chat([image_message(str(media_dir / "a.png"))], max_tokens=6, temperature=0)
    assert text == whole.text


def test_bad_inputs(smollm2: lc.Model, smollm2_path: Path, mm_llm: lc.LLM,
                    media_dir: Path) -> None:
    with pytest.raises(MediaError, match="neither an image"):
        mm_llm.chat([image_message(str(media_dir / "broken.png"))], max_tokens=2)
    with pytest.raises(MediaError, match="not found"):
        mm_llm.chat([image_message(str(media_dir / "missing.png"))], max_tokens=2)
    with pytest.raises(MediaError, match="remote URLs"):
        mm_llm.chat([image_message("https://127.0.0.1/x.png")], max_tokens=2)
    with pytest.raises(MediaError, match="base64"):
        mm_llm.chat([image_message("data:image/png;base64,@@@")], max_tokens=2)
    with pytest.raises(MediaError, match="uint8"):
        Bitmap.from_array(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ProjectorLoadError, match="n_embd = 576.*n_embd = 320"):
        MultimodalProjector(smollm2, media_dir / "mmproj-wrong.gguf")
    with pytest.raises(ProjectorLoadError, match="not found"):
        MultimodalProjector(smollm2, media_dir / "nope.gguf")
    proj = mm_llm.projector
    assert proj is not None
    with pytest.raises(MediaError, match="markers"):
        proj.tokenize("no marker here", [media_dir / "a.png"]).close()
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 1600)
    audio_part = {"type": "input_audio", "input_audio": {
        "data": base64.b64encode(buf.getvalue()).decode(), "format": "wav"}}
    with pytest.raises(MediaError, match="no audio encoder"):
        mm_llm.chat([{"role": "user", "content": [audio_part]}], max_tokens=2)
    mm_llm.allow_media_files = False  # what a server does
    try:
        with pytest.raises(MediaError, match="local files are not allowed"):
            mm_llm.chat([image_message(str(media_dir / "a.png"))], max_tokens=2)
    finally:
        mm_llm.allow_media_files = True
    # the LLM still works after all that
    assert mm_llm.chat([image_message(str(media_dir / "a.png"))], max_tokens=2,
                       temperature=0).usage.completion_tokens > 0
    with lc.LLM(smollm2_path, n_ctx=256) as text_only:
        with pytest.raises(MultimodalError, match="without a multimodal projector"):
            text_only.chat([image_message(str(media_dir / "a.png"))], max_tokens=2)


def test_build_without_libmtmd_says_so(smollm2: lc.Model, media_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_cffi._bindings import mtmd

    assert lc.system_info().supports_multimodal is mtmd.HAVE_MTMD
    # what a -DLLAMA_CFFI_MTMD=OFF build sees (its extension has no mtmd_* symbols)
    monkeypatch.setattr(mtmd, "HAVE_MTMD", False)
    with pytest.raises(lc.MultimodalUnavailableError, match="not compiled.*LLAMA_CFFI_MTMD"):
        MultimodalProjector(smollm2, media_dir / "mmproj.gguf")


def test_cli_run_with_an_image(mm_llm: lc.LLM, smollm2_path: Path, media_dir: Path) -> None:
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "llama_cffi", "run", "-m", str(smollm2_path), "--mmproj",
         str(media_dir / "mmproj.gguf"), "--image", str(media_dir / "a.png"), "-c", "512",
         "-n", "8", "--temp", "0", "Describe:"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proj = mm_llm.projector
    assert proj is not None
    ours = mm_llm.complete(proj.marker + "Describe:", media=[media_dir / "a.png"],
                           max_tokens=8, temperature=0)
    assert proc.stdout == ours.text + "\n"


def test_new_image_in_a_follow_up_and_parallel_slots(smollm2_path: Path,
                                                     media_dir: Path) -> None:
    with lc.LLM(smollm2_path, n_ctx=2048, n_seq_max=2,
                mmproj=media_dir / "mmproj.gguf") as llm:
        proj = llm.projector
        assert proj is not None
        first = llm.chat([image_message(str(media_dir / "a.png"))], max_tokens=5,
                         temperature=0)
        turn2 = [image_message(str(media_dir / "a.png")),
                 {"role": "assistant", "content": first.text},
                 image_message(str(media_dir / "b.png"), "And this one?")]
        reused = llm.chat(turn2, max_tokens=8, temperature=0)
        assert reused.usage.cached_tokens > N_PATCHES and proj.n_encoded == 2
        llm.engine.call(lambda: llm.ctx.clear())
        proj.clear_cache()
        fresh = llm.chat(turn2, max_tokens=8, temperature=0)
        assert fresh.text == reused.text and proj.n_encoded == 4
        # two requests with different images in two slots at once
        llm.engine.call(lambda: llm.ctx.clear())
        handles = [llm.submit(proj.marker + "Describe:", media=[media_dir / name],
                              max_tokens=8, temperature=0) for name in ("a.png", "b.png")]
        together = [h.result(timeout=120).text for h in handles]
        alone = [llm.complete(proj.marker + "Describe:", media=[media_dir / name],
                              max_tokens=8, temperature=0).text for name in ("a.png", "b.png")]
        assert together == alone and together[0] != together[1]
