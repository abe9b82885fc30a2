"""pgobserve: live PostgreSQL row changes for Django Channels WebSocket clients."""

from .registry import observe

__version__ = "0.1.0"

__all__ = ["observe", "__version__"]
