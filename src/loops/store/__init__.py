"""Durable storage of the queue behind one interface; :func:`open_store` picks the backend."""

from __future__ import annotations

from loops.store.factory import open_store

__all__ = ["open_store"]
