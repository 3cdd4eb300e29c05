"""The sync server: an ASGI app around the hub, and a uvicorn runner."""

from .app import ServerLimits, SyncServer, create_app
from .run import run_server, serve_in_background

__all__ = [
    "ServerLimits",
    "SyncServer",
    "create_app",
    "run_server",
    "serve_in_background",
]
