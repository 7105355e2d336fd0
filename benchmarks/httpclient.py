"""The load generator's HTTP client: aiohttp by default, httpx on request.

Why not one `httpx.AsyncClient` with a pool sized to the concurrency: httpcore 1.0's pool scans
every connection on every request (`_assign_requests_to_connections`, with a `getpeername()` and
a socket poll per connection: encode/httpx#3215), so at 64 connections one client spent ~7 ms of
CPU per request here and delivered ~120 requests/s, whatever the server. `HttpxClient` therefore
keeps a free list of single-connection clients (~0.8-0.9 ms of CPU per request), and
`AiohttpClient` (aiohttp comes with ray[serve]) costs ~0.13 ms per request, so the client is not
what a fast baseline is measured against. Both report transport failures the same way.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import httpx

CLIENT_KINDS = ("aiohttp", "httpx")


class TransportError(Exception):
    """No HTTP answer: `kind` is "Timeout" or the underlying exception's class name."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class HttpClient(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """(status, parsed JSON body or None, headers); raises TransportError."""
        ...

    async def aclose(self) -> None: ...


class AiohttpClient:
    def __init__(self, base_url: str, *, pool: int, timeout: float) -> None:
        self._base = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        query = {k: str(v) for k, v in params.items()} if params else None
        try:
            async with self._session.request(
                method,
                self._base + path,
                json=json_body,
                params=query,
                headers=headers,
            ) as r:
                raw = await r.read()
                status, resp_headers = r.status, r.headers
        except TimeoutError:
            raise TransportError("Timeout")
        except aiohttp.ClientError as exc:
            raise TransportError(type(exc).__name__)
        return status, _parse(raw), resp_headers

    async def aclose(self) -> None:
        await self._session.close()


class HttpxClient:
    """A free list of one-connection `httpx.AsyncClient`s: each request takes one, O(1) per request."""

    def __init__(self, base_url: str, *, pool: int, timeout: float) -> None:
        ctx = ssl.create_default_context()  # one context for all (building one costs ~20 ms)
        self._all = [
            httpx.AsyncClient(
                base_url=base_url,
                timeout=timeout,
                verify=ctx,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            for _ in range(pool)
        ]
        self._free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._all:
            self._free.put_nowait(client)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        client = await self._free.get()
        try:
            r = await client.request(method, path, json=json_body, params=params, headers=headers)
        except httpx.TimeoutException:
            raise TransportError("Timeout")
        except httpx.HTTPError as exc:
            raise TransportError(type(exc).__name__)
        finally:
            self._free.put_nowait(client)
        return r.status_code, _parse(r.content), r.headers

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._all))


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def open_client(kind: str, base_url: str, *, pool: int, timeout: float) -> HttpClient:
    if kind == "aiohttp":
        return AiohttpClient(base_url, pool=pool, timeout=timeout)
    if kind == "httpx":
        return HttpxClient(base_url, pool=pool, timeout=timeout)
    raise ValueError(f"unknown HTTP client {kind!r}; choose from {', '.join(CLIENT_KINDS)}")
