"""HTTPS applications on the asyncio front end: a static file server on h11 (``tlskit serve``)."""
