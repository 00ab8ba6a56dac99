"""/metrics in Prometheus' text format, read from the engines at scrape time.

llama-server's metric names (``llamacpp:prompt_tokens_total``,
``llamacpp:tokens_predicted_total``, ``llamacpp:requests_processing`` ...)
are kept, with a ``model`` label since one server holds several models;
counters of a model survive its unloading. Model loading and unloading, and
HTTP answers (those whose status line was sent) and clients that disconnected
before their answer was complete, are counted under ``llama_cffi_*`` names.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .state import ServerState

# EngineMetrics counter -> (llama-server's name, help)
_COUNTERS = {
    "prompt_tokens_total": ("llamacpp:prompt_tokens", "Prompt tokens processed (cached ones "
                            "included)"),
    "prompt_tokens_evaluated": ("llamacpp:prompt_tokens_evaluated", "Prompt tokens evaluated "
                                "(not taken from a slot's cache)"),
    "cached_tokens_total": ("llamacpp:prompt_tokens_cached", "Prompt tokens reused from cache"),
    "generated_tokens_total": ("llamacpp:tokens_predicted", "Tokens generated"),
    "decode_calls": ("llamacpp:n_decode", "llama_decode calls"),
    "run_decode_calls": ("llama_cffi_run_decode_calls", "llama_decode calls made by "
                         "generation runs in C (several tokens per interpreter step)"),
    "decode_seconds": ("llama_cffi_decode_seconds", "Seconds inside llama_decode"),
    "requests_total": ("llama_cffi_requests", "Generation requests finished"),
    "requests_failed": ("llama_cffi_requests_failed", "Generation requests that ended in error"),
    "requests_cancelled": ("llama_cffi_requests_cancelled", "Generation requests cancelled "
                           "(client gone, timeout)"),
    "prefix_copies": ("llama_cffi_prefix_copies", "Prefixes copied from another slot"),
}
_GAUGES = {
    "requests_running": ("llamacpp:requests_processing", "Requests being generated"),
    "requests_queued": ("llamacpp:requests_deferred", "Requests waiting for a slot"),
    "kv_cells_used": ("llamacpp:kv_cache_tokens", "KV cache cells in use"),
}


class _ServerCollector(Collector):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        manager = self.state.manager
        counters = {k: CounterMetricFamily(name, doc, labels=["model"])
                    for k, (name, doc) in _COUNTERS.items()}
        gauges = {k: GaugeMetricFamily(name, doc, labels=["model"])
                  for k, (name, doc) in _GAUGES.items()}
        loaded = GaugeMetricFamily("llama_cffi_model_loaded", "1 if the model is loaded",
                                   labels=["model"])
        for entry in self.state.config.models:
            name = entry.name
            totals = dict(manager.retired.get(name, {}))
            lm = manager.loaded.get(name)
            live = vars(lm.llm.engine.metrics) if lm is not None else {}
            for key in _COUNTERS:
                counters[key].add_metric([name], totals.get(key, 0) + live.get(key, 0))
            for key in _GAUGES:
                gauges[key].add_metric([name], live.get(key, 0))
            loaded.add_metric([name], 1 if lm is not None else 0)
        yield from counters.values()
        yield from gauges.values()
        yield loaded
        loads = CounterMetricFamily("llama_cffi_model_loads", "Model loads", labels=["model"])
        fails = CounterMetricFamily("llama_cffi_model_load_failures", "Failed model loads",
                                    labels=["model"])
        for entry in self.state.config.models:
            loads.add_metric([entry.name], manager.loads[entry.name])
            fails.add_metric([entry.name], manager.load_failures[entry.name])
        yield loads
        yield fails
        unloads = CounterMetricFamily("llama_cffi_model_unloads", "Model unloads by reason",
                                      labels=["model", "reason"])
        for (name, reason), n in sorted(manager.unloads.items()):
            unloads.add_metric([name, reason], n)
        yield unloads
        http = CounterMetricFamily("llama_cffi_http_requests", "HTTP answers",
                                   labels=["method", "route", "status"])
        for (method, route, status), n in sorted(self.state.http_requests.items()):
            http.add_metric([method, route, str(status)], n)
        yield http
        gone = CounterMetricFamily("llama_cffi_http_disconnects", "Clients that disconnected "
                                   "before their answer was complete (phase: request = before "
                                   "the status line, response = during the body)",
                                   labels=["method", "route", "phase"])
        for (method, route, phase), n in sorted(self.state.http_disconnects.items()):
            gone.add_metric([method, route, phase], n)
        yield gone


def render_metrics(state: ServerState) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServerCollector(state))
    return generate_latest(registry), CONTENT_TYPE_LATEST
