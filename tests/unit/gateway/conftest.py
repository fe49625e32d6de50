"""In-process gateway fixtures: an app over the memory store, an httpx client on it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from loops import config
from loops.gateway.app import create_app
from loops.gateway.state import Gateway
from loops.services.queue import QueueService
from loops.store.memory import MemoryStore


class Clock:
    """A settable clock for lease expiry."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return config.load_settings(env={}, cwd=tmp_path)


@pytest.fixture
def service(settings: config.Settings, clock: Clock) -> QueueService:
    store = MemoryStore()
    store.migrate()
    return QueueService(store, settings.queue, clock=clock, rng=random.Random(1))


@pytest.fixture
async def make_client(
    service: QueueService, settings: config.Settings
) -> AsyncIterator[Callable[..., Any]]:
    """Build an app (with its lifespan running) and a client; closed afterwards."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def make(
        *, env: dict[str, str] | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.AsyncClient:
        app_settings = settings if env is None else config.load_settings(env=env)
        app = create_app(service, app_settings, **kw)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=headers
        )
        client.app = app  # type: ignore[attr-defined]
        opened.append((lifespan, client))
        return client

    yield make
    for lifespan, client in reversed(opened):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client()
    return result


@pytest.fixture
def gateway_of() -> Callable[[httpx.AsyncClient], Gateway]:
    """The gateway behind an in-process client."""

    def find(client: httpx.AsyncClient) -> Gateway:
        app: FastAPI = client.app  # type: ignore[attr-defined]
        gw = app.state.gateway
        assert isinstance(gw, Gateway)
        return gw

    return find
