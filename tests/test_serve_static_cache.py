"""The in-memory cache of small static files: fresh after a change on disk, large files streamed, Range,
HEAD, conditionals and LRU bounds. In process: ``StaticFiles.handle`` with h11 over an in-memory writer."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import h11
import pytest

from tests.served import ChannelTransport
from tlskit.serve import static
from tlskit.serve.channel import Channel
from tlskit.serve.http1 import _PENDING, Exchange, HTTPError, Request, TLSState
from tlskit.serve.settings import HTTPLimits, StaticRoute
from tlskit.serve.static import FileCache, StaticFiles

OLD = 1_600_000_000  # an mtime/atime long settled


def fetch(route: StaticFiles, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    async def run() -> tuple[int, dict[str, str], bytes]:
        conn = h11.Connection(h11.SERVER)
        head = [("host", "localhost"), *(headers or {}).items()]
        conn.receive_data(h11.Connection(h11.CLIENT).send(h11.Request(method=method, target=path, headers=head))
                          or b"")
        event = conn.next_event()
        assert isinstance(event, h11.Request)
        assert isinstance(conn.next_event(), h11.EndOfMessage)
        request = Request(method=method, target=path, path=path, host="localhost",
                          headers=list(event.headers), http_version="1.1", peer="-", tls_state=TLSState(_PENDING),
                          first_on_connection=True)
        writer = ChannelTransport()
        channel = Channel(lambda _: None)
        channel.connection_made(writer)
        try:
            await route.handle(request, Exchange(conn, channel, HTTPLimits(), close_after=False))
        except HTTPError as e:
            return e.status, dict(e.headers), b""
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method=method, target=path, headers=[("host", "localhost")]))
        client.send(h11.EndOfMessage())
        client.receive_data(bytes(writer.data))
        response = client.next_event()
        assert isinstance(response, h11.Response)
        body = b""
        while isinstance(part := client.next_event(), h11.Data):
            body += part.data
        assert isinstance(part, h11.EndOfMessage)
        return response.status_code, {k.decode(): v.decode() for k, v in response.headers}, body

    return asyncio.run(run())


SETTLE = 0.05


def write(path: Path, data: bytes, mtime: int = OLD) -> None:
    """Then wait until it is settled (cacheable), and another write gets another ctime whatever the clock's
    granularity."""
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    time.sleep(SETTLE * 1.5)


@pytest.fixture
def cache() -> FileCache:
    return FileCache(max_file=1024, max_bytes=4096)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(static, "SETTLE_NS", int(SETTLE * 1e9))  # instead of a second
    (tmp_path / "www").mkdir()
    return tmp_path / "www"


def test_small_file_is_cached_and_served_from_memory(root: Path, cache: FileCache,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write(root / "a.txt", b"hello cache\n")
    route = StaticFiles(StaticRoute(root=root), cache)
    first = fetch(route, "/a.txt")
    assert first[0] == 200 and first[2] == b"hello cache\n" and len(cache) == 1
    opened: list[object] = []

    def counting_open(*args: object, **kwargs: object) -> object:
        opened.append(args)
        return open(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(static, "open", counting_open, raising=False)
    assert fetch(route, "/a.txt") == first and not opened  # no open() on a hit: only a stat


def test_changed_file_is_served_fresh(root: Path, cache: FileCache) -> None:
    route = StaticFiles(StaticRoute(root=root), cache)
    path = root / "a.txt"
    write(path, b"version 1\n")
    assert fetch(route, "/a.txt")[2] == b"version 1\n" and len(cache) == 1
    write(path, b"version 2\n")  # same size, same mtime: only ctime tells
    assert fetch(route, "/a.txt")[2] == b"version 2\n"
    write(path, b"version three\n", mtime=OLD + 1)
    status, headers, body = fetch(route, "/a.txt")
    assert (status, body, headers["content-length"]) == (200, b"version three\n", "14")
    assert headers["etag"] == f'"e-{(OLD + 1) * 10**9:x}"'
    path.unlink()
    write(root / "b.txt", b"version 4\n")
    (root / "b.txt").rename(path)  # replaced: another inode
    assert fetch(route, "/a.txt")[2] == b"version 4\n" and len(cache) == 1  # the older versions were dropped
    path.unlink()
    assert fetch(route, "/a.txt")[0] == 404


def test_recently_changed_file_is_not_cached(root: Path, cache: FileCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(static, "SETTLE_NS", 10**12)
    write(root / "a.txt", b"just written\n")
    route = StaticFiles(StaticRoute(root=root), cache)
    assert fetch(route, "/a.txt")[2] == b"just written\n" and len(cache) == 0


def test_large_file_is_not_cached_and_streams(root: Path, cache: FileCache) -> None:
    data = bytes(range(256)) * 300  # 76800 bytes: over max_file, more than one CHUNK
    write(root / "big.bin", data)
    route = StaticFiles(StaticRoute(root=root), cache)
    status, headers, body = fetch(route, "/big.bin")
    assert (status, body, headers["content-length"]) == (200, data, str(len(data))) and len(cache) == 0
    status, headers, body = fetch(route, "/big.bin", {"range": "bytes=70000-"})
    assert (status, body, headers["content-range"]) == (206, data[70000:], f"bytes 70000-{len(data) - 1}/{len(data)}")


def test_range_head_and_conditionals_on_a_cached_file(root: Path, cache: FileCache) -> None:
    write(root / "notes.txt", b"plain notes\n")
    route = StaticFiles(StaticRoute(root=root), cache)
    status, full, body = fetch(route, "/notes.txt")
    assert len(cache) == 1
    etag, modified = full["etag"], full["last-modified"]
    assert fetch(route, "/notes.txt", {"range": "bytes=6-10"})[::2] == (206, b"notes")
    assert fetch(route, "/notes.txt", {"range": "bytes=6-10"})[1]["content-range"] == "bytes 6-10/12"
    assert fetch(route, "/notes.txt", {"range": "bytes=-6"})[::2] == (206, b"notes\n")
    assert fetch(route, "/notes.txt", {"range": "bytes=0-"})[::2] == (206, b"plain notes\n")
    assert fetch(route, "/notes.txt", {"range": "bytes=6-10", "if-range": '"stale"'})[::2] == (200, b"plain notes\n")
    assert fetch(route, "/notes.txt", {"range": "bytes=50-"})[:2] == (416, {"content-range": "bytes */12"})
    assert fetch(route, "/notes.txt", {"if-none-match": etag})[0] == 304
    assert fetch(route, "/notes.txt", {"if-modified-since": modified})[0] == 304
    assert fetch(route, "/notes.txt", {"if-match": '"other"'})[0] == 412
    status, head, body = fetch(route, "/notes.txt", method="HEAD")
    assert (status, body) == (200, b"")
    assert {k: v for k, v in head.items() if k != "date"} == {k: v for k, v in full.items() if k != "date"}


def test_empty_file(root: Path, cache: FileCache) -> None:
    write(root / "empty", b"")
    route = StaticFiles(StaticRoute(root=root), cache)
    assert fetch(route, "/empty")[::2] == (200, b"")
    assert fetch(route, "/empty")[::2] == (200, b"")


def test_lru_keeps_within_max_bytes() -> None:
    cache = FileCache(max_file=1000, max_bytes=2500)
    keys = [(f"/f{i}", 1000, 1, 1, i) for i in range(3)]
    cache.put(keys[0], b"0" * 1000)
    cache.put(keys[1], b"1" * 1000)
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[2], b"2" * 1000)
    assert keys[1] not in cache and keys[0] in cache and keys[2] in cache and cache.size == 2000
    cache.put(("/big", 1001, 1, 1, 9), b"x" * 1001)
    assert len(cache) == 2
    newer = ("/f0", 1000, 2, 2, 0)
    cache.put(newer, b"n" * 1000)
    assert keys[0] not in cache and newer in cache and cache.size == 2000  # one version per path
    cache.clear()
    assert (len(cache), cache.size) == (0, 0)


def test_defaults() -> None:
    assert (static.SMALL_FILE_MAX, static.CACHE_MAX_BYTES) == (64 * 1024, 32 * 1024 * 1024)
    assert (static.FILES.max_file, static.FILES.max_bytes) == (static.SMALL_FILE_MAX, static.CACHE_MAX_BYTES)
    assert time.time_ns() > static.SETTLE_NS
