"""edgembed serve: an HTTP embedding server (OpenAI and TEI APIs, dynamic batching) for an exported model.

    edgembed serve OUT                     # http://127.0.0.1:8080, needs: pip install "edgembed[server]"

    from edgembed.serve import create_app  # the same routes as an ASGI app, to mount in your own app

Importing this package imports no web framework; `create_app` (serve.app) does.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("create_app", "EmbeddingService"):
        from . import app, service

        return getattr(app, name, None) or getattr(service, name)
    raise AttributeError(f"module 'edgembed.serve' has no attribute {name!r}")
