"""Speculative decoding speed-up on SmolLM2 (F16 target, Q4_1 draft), and the
same pair through llama.cpp's own llama-speculative-simple; n-gram lookup on a
copying task.

    python benchmarks/speculative_speedup.py [--tokens 256]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess

import llama_cffi as lc

from _common import tools_dir

PROMPTS = ["Once upon a time", "The history of the printing press begins in",
           "Here is a recipe for a simple tomato soup:"]


def tool_speed(args: list[str]) -> float:
    """Generation tokens/s a llama.cpp tool prints: llama-speculative-simple's
    "decoded N tokens in T s", or llama-completion's "eval time ... tokens per second"."""
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    m = re.search(r"decoded\s+(\d+) tokens in\s+([0-9.]+) s", proc.stderr)
    if m:
        return int(m.group(1)) / float(m.group(2))
    m = re.search(r"\s eval time =.*?([0-9.]+) tokens per second", proc.stderr)
    if not m:
        raise RuntimeError(f"no speed in the output of {args[0]}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--draft-max", type=int, default=4)
    a = ap.parse_args()
    draft = lc.models.fetch("smollm2-135m")
    target = lc.models.cache_dir() / "SmolLM2-135M-Instruct.F16-from-Q4_1.gguf"
    if not target.exists():
        lc.quantize(draft, target, "f16", allow_requantize=True)
    bin_dir = tools_dir()
    rows = []
    with lc.LLM(target, n_ctx=2048, n_threads=2) as plain, \
            lc.LLM(target, n_ctx=2048, n_threads=2, draft_model=draft,
                   draft_n_max=a.draft_max) as spec:
        for prompt in PROMPTS:
            p = plain.complete(prompt, max_tokens=a.tokens, temperature=0)
            s = spec.complete(prompt, max_tokens=a.tokens, temperature=0)
            ref_plain = tool_speed([str(bin_dir / "llama-completion"), "-m", str(target),
                                    "-p", prompt, "-n", str(a.tokens), "-t", "2", "--temp", "0",
                                    "-no-cnv", "-c", "2048"])
            ref_spec = tool_speed([str(bin_dir / "llama-speculative-simple"), "-m", str(target),
                                   "-md", str(draft), "-p", prompt, "-n", str(a.tokens),
                                   "--temp", "0", "--spec-type", "draft-simple",
                                   "--spec-draft-n-max", str(a.draft_max), "-t", "2",
                                   "-c", "2048"])
            rows.append((prompt, p.timings.generation_tokens_per_second,
                         s.timings.generation_tokens_per_second, s.timings.acceptance_rate,
                         ref_plain, ref_spec))
    print("| prompt | target alone t/s | speculative t/s | speed-up | accepted | "
          "llama-completion t/s | llama-speculative-simple t/s | llama.cpp speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for prompt, p, s, acc, rp, rs in rows:
        print(f"| {prompt[:28]} | {p:.1f} | {s:.1f} | {s / p:.2f}x | {acc:.0%} | {rp:.1f} | "
              f"{rs:.1f} | {rs / rp:.2f}x |")
    ours = statistics.median(r[2] / r[1] for r in rows)
    theirs = statistics.median(r[5] / r[4] for r in rows)
    print(f"\nmedian speed-up: llama_cffi {ours:.2f}x, llama.cpp {theirs:.2f}x")

    passage = ("def fibonacci(n):\n    if n < 2:\n        return n\n"
               "    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
               "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n"
               "        result *= i\n    return result\n")
    msgs = [{"role": "user", "content": "Copy the following code exactly, without changes:\n\n"
             + passage}]
    with lc.LLM(target, n_ctx=2048, n_threads=2) as plain, \
            lc.LLM(target, n_ctx=2048, n_threads=2, speculative="ngram", ngram_size_n=3,
                   ngram_size_m=16) as ng:
        p = plain.chat(msgs, max_tokens=200, temperature=0)
        s = ng.chat(msgs, max_tokens=200, temperature=0)
    print(f"\nn-gram lookup, copying code: {p.timings.generation_tokens_per_second:.1f} -> "
          f"{s.timings.generation_tokens_per_second:.1f} t/s "
          f"({s.timings.generation_tokens_per_second / p.timings.generation_tokens_per_second:.2f}x), "
          f"accepted {s.timings.acceptance_rate:.0%} of {s.timings.drafted_tokens} drafted")


if __name__ == "__main__":
    main()
