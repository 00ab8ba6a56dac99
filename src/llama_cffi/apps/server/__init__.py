"""The OpenAI- and Ollama-compatible HTTP server (``llama-cffi serve``).

Needs the optional extra ``server`` (Starlette, uvicorn, pydantic,
prometheus-client); the rest of llama_cffi never imports this package.

Modules: ``config`` (models file, settings), ``manager`` (load on demand,
TTL, LRU), ``schemas`` (request bodies), ``openai_api``, ``ollama_api``,
``llama_api`` (llama-server's extras), ``metrics``, ``streaming``,
``tools`` (tool calls), ``errors``, ``app`` (the ASGI app).
"""

from __future__ import annotations
