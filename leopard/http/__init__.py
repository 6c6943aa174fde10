"""The HTTP face: an ASGI app over the public Python API, and its pieces."""
