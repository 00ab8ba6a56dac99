"""Hosts that run llama_cffi on many machines: Ray Data (:mod:`.ray_data`, batch
inference with one model per actor) and Ray Serve (:mod:`.ray_serve`, the
``llama-cffi serve`` application as Serve replicas). Ray is the optional extra
``ray``; importing this package imports nothing of it."""
