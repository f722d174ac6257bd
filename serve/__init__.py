"""edgembed serve: an HTTP embedding server (OpenAI and TEI APIs, dynamic batching) for an exported model.

    edgembed serve OUT                     # http://127.0.0.1:8080, needs: pip install "edgembed[server]"

Importing this package imports no web framework; serve.app and serve.server do.
"""
