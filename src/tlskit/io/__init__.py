"""Front ends that put the sans-IO ``Connection`` on real transports: ``io.socket`` (blocking, shaped like
``ssl.SSLSocket``) and ``io.asyncio`` (streams, ``open_connection``/``start_server``)."""
