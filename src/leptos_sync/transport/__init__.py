"""Transports: how a replica reaches the sync server."""

from .base import Connection, Transport

__all__ = ["Connection", "Transport"]
