"""Async HTTP load generator for the scoring endpoint (and for ``mlflow models serve``).

Two modes, both bounded in requests and in time:

* **fixed rate** (open loop): request ``i`` is due at ``t0 + i / rate`` whether or not
  earlier ones have answered, so a slow server cannot slow the offered load down.
  Latency is measured from the *due* time (no coordinated omission); the latency from
  the moment the request was actually handed to the client is kept too (``sent_*``).
  At most ``max_in_flight`` requests are outstanding; a request due beyond that is not
  sent and counted as ``client_backlog`` error.
* **fixed concurrency** (closed loop): ``concurrency`` workers send back to back.
* **windows** (a soak): the fixed-rate open loop on one schedule for several consecutive
  windows (e.g. minutes), one result per window, with a callback at each window's end.

Bodies are encoded before the run and cycled, so the client does no JSON work while
measuring. The default client is a minimal keep-alive HTTP/1.1 client on asyncio protocols
(``raw``), the cheapest in client CPU per request (measured: ``docs/synthetic.md``);
aiohttp and httpx are there to compare. Each result reports the client's own CPU time per
request. Only loopback targets are accepted: this tool must not generate load elsewhere.

Run it by hand against a running server::

    python -m synthetic.loadgen --url http://127.0.0.1:8080 --rate 1000 --seconds 10 --batch 1
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import numpy as np
import orjson

from synthetic.sample import generate_impressions

MAX_REQUESTS = 200_000
MAX_SECONDS = 120.0
#: Bounds of a windowed run (:func:`run_rate_windows`): in all, and per window the ones above.
MAX_SOAK_REQUESTS = 2_000_000
MAX_SOAK_SECONDS = 3600.0


def check_loopback(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` points at this machine."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"refusing to generate load against {host!r}: only loopback targets (127.0.0.1, ::1)")


@dataclass
class LoadResult:
    """One measured run: counts, errors, latencies and the client's own CPU time."""

    name: str
    mode: str  # "rate" or "concurrency"
    target: float  # requests/s or workers
    requests: int = 0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    latencies_ms: np.ndarray = field(default_factory=lambda: np.empty(0))  # successful requests
    sent_latencies_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    predictions_per_request: int = 1
    client_cpu_seconds: float = 0.0  # CPU time of this process during the run (the client's cost)

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float, sent: bool = False) -> float:
        """The ``q``-th latency percentile in ms (from the due time, or from sending when ``sent``)."""
        a = self.sent_latencies_ms if sent else self.latencies_ms
        return float(np.percentile(a, q)) if a.size else float("nan")

    def summary(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        lat = self.latencies_ms
        return {
            "name": self.name, "mode": self.mode, "target": self.target, "requests": self.requests,
            "ok": self.ok, "errors": dict(self.errors), "seconds": round(self.seconds, 3),
            "throughput_rps": round(self.throughput, 1),
            "predictions_per_s": round(self.throughput * self.predictions_per_request, 1),
            "p50_ms": round(self.pct(50), 3), "p90_ms": round(self.pct(90), 3), "p99_ms": round(self.pct(99), 3),
            "max_ms": round(float(lat.max()), 3) if lat.size else float("nan"),
            "sent_p99_ms": round(self.pct(99, sent=True), 3),
            "client_cpu_us_per_request": round(self.client_cpu_seconds / self.requests * 1e6, 1)
            if self.requests else float("nan"),
        }

    def line(self) -> str:
        """The result on one line."""
        s = self.summary()
        target = f"{s['target']:g}/s" if self.mode == "rate" else f"c={s['target']:g}"
        errs = ", ".join(f"{k}={v}" for k, v in sorted(s["errors"].items())) or "0"
        return (f"{s['name']:<34} {target:>8} {s['throughput_rps']:>9.1f} req/s {s['predictions_per_s']:>10.0f} pred/s  "
                f"p50 {s['p50_ms']:7.2f}  p90 {s['p90_ms']:7.2f}  p99 {s['p99_ms']:7.2f}  max {s['max_ms']:8.2f} ms  "
                f"errors {errs}  (client {s['client_cpu_us_per_request']:.0f} us CPU/req)")


#: A connection idle this long is not reused: below the server's keep-alive (``ctr serve``: 5 s),
#: as a client configured for the server does; else the server's close can race a request sent
#: on the connection (the request then fails with a connection reset).
IDLE_SECONDS = 4.0


class _RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time; Content-Length bodies only."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.future: asyncio.Future | None = None
        self.closed = False
        self.idle_since = time.monotonic()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.future is None or self.future.done():
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self.future.set_exception(ConnectionError("response without content-length"))
            return
        length = int(head[at + 17:head.find(b"\r\n", at + 2) if head.find(b"\r\n", at + 2) > 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        self.future.set_result((status, body))

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc or ConnectionError("connection closed by the server"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionError("not connected")
        self.future = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.future

    def usable(self) -> bool:
        """Open, not closing (e.g. after the server's keep-alive timeout), not idle too long."""
        return (not self.closed and self.transport is not None and not self.transport.is_closing()
                and time.monotonic() - self.idle_since < IDLE_SECONDS)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """One ``request(method, url, body, headers) -> (status, bytes)`` over three clients:
    ``raw`` (the minimal keep-alive HTTP/1.1 client above: the lowest client overhead),
    ``aiohttp`` or ``httpx``. ``connections`` bounds the connections kept open."""

    def __init__(self, kind: str, connections: int, timeout: float):
        if kind not in CLIENTS:
            raise ValueError(f"unknown client {kind!r} (one of {', '.join(CLIENTS)})")
        self.kind = kind
        self.connections = connections
        self.timeout = timeout

    async def __aenter__(self):
        if self.kind == "aiohttp":
            import aiohttp

            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, force_close=False,
                                               keepalive_timeout=IDLE_SECONDS),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        elif self.kind == "httpx":
            import httpx

            self.session = httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(
                max_connections=self.connections, max_keepalive_connections=self.connections,
                keepalive_expiry=IDLE_SECONDS))
        else:
            self.idle: list[_RawConnection] = []
            self.open = 0
            self.slots = asyncio.Semaphore(self.connections)
            self.all: list[_RawConnection] = []
        return self

    async def __aexit__(self, *exc):
        if self.kind == "aiohttp":
            await self.session.close()
        elif self.kind == "httpx":
            await self.session.aclose()
        else:
            for conn in self.all:
                conn.close()

    async def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one request; return (status, body)."""
        if self.kind == "aiohttp":
            async with self.session.request(method, url, data=body, headers=headers) as resp:
                return resp.status, await resp.read()
        if self.kind == "httpx":
            resp = await self.session.request(method, url, content=body, headers=headers)
            return resp.status_code, resp.content
        parts = urlsplit(url)
        body = body or b""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = (f"{method} {parts.path or '/'} HTTP/1.1\r\nhost: {parts.netloc}\r\n{head}"
                f"content-length: {len(body)}\r\n\r\n").encode("latin-1") + body
        async with self.slots:
            conn = None
            while self.idle and conn is None:
                conn = self.idle.pop()
                if not conn.usable():
                    conn.close()
                    conn = None
            if conn is None:
                if parts.hostname is None:
                    raise ValueError(f"no host in {url!r}")
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(_RawConnection, parts.hostname, parts.port or 80)
                self.all.append(conn)
            try:
                result = await asyncio.wait_for(conn.request(data), self.timeout)
            except BaseException:
                conn.close()
                raise
            if not conn.closed:
                conn.idle_since = time.monotonic()
                self.idle.append(conn)
            return result


CLIENTS = ("raw", "aiohttp", "httpx")


async def _one(client: HttpClient, method: str, url: str, body: bytes | None, headers: dict[str, str],
               inspect: Callable[[int, bytes], str | None] | None) -> str | None:
    """None on success, else an error kind."""
    try:
        status, content = await client.request(method, url, body, headers)
    except asyncio.TimeoutError:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - every client failure is a counted error
        return type(exc).__name__
    if status != 200:
        return f"http_{status}"
    return inspect(status, content) if inspect else None


async def run_rate(url: str, bodies: Sequence[bytes] | None, *, rate: float, seconds: float, name: str = "",
                   method: str = "POST", client: str = "raw", timeout: float = 5.0,
                   max_in_flight: int = 512, headers: dict[str, str] | None = None,
                   inspect: Callable[[int, bytes], str | None] | None = None,
                   predictions_per_request: int = 1) -> LoadResult:
    """Open loop at ``rate`` requests/s for ``seconds``."""
    if seconds > MAX_SECONDS:
        raise ValueError(f"rate x seconds must give 1..{MAX_REQUESTS} requests within {MAX_SECONDS:g} s")
    (res,) = await run_rate_windows(url, bodies, rate=rate, windows=1, window_seconds=seconds, name=name,
                                    method=method, client=client, timeout=timeout, max_in_flight=max_in_flight,
                                    headers=headers, inspect=inspect, predictions_per_request=predictions_per_request)
    res.name = name or url
    return res


async def run_rate_windows(url: str, bodies: Sequence[bytes] | None, *, rate: float, windows: int,
                           window_seconds: float, on_window: Callable[[int], None] | None = None,
                           name: str = "", method: str = "POST", client: str = "raw", timeout: float = 5.0,
                           max_in_flight: int = 512, headers: dict[str, str] | None = None,
                           inspect: Callable[[int, bytes], str | None] | None = None,
                           predictions_per_request: int = 1) -> list[LoadResult]:
    """Open loop at ``rate`` requests/s for ``windows`` consecutive windows of ``window_seconds``
    on one schedule (no pause between windows, one set of connections): one result per
    window, a request counting in the window it was due in. ``on_window(k)`` is called on
    the event loop as window ``k``'s last request is due (keep it short: it delays sending)."""
    check_loopback(url)
    per = int(rate * window_seconds)
    if not 0 < per <= MAX_REQUESTS or window_seconds > MAX_SECONDS or windows < 1 \
            or per * windows > MAX_SOAK_REQUESTS or windows * window_seconds > MAX_SOAK_SECONDS:
        raise ValueError(f"rate x window_seconds must give 1..{MAX_REQUESTS} requests per window of at most "
                         f"{MAX_SECONDS:g} s, and {MAX_SOAK_REQUESTS} requests within {MAX_SOAK_SECONDS:g} s in all")
    headers = {"content-type": "application/json", **(headers or {})}
    results = [LoadResult(f"{name or url} [{k + 1}]", "rate", rate, predictions_per_request=predictions_per_request)
               for k in range(windows)]
    lats = [np.full(per, np.nan) for _ in range(windows)]
    sent = [np.full(per, np.nan) for _ in range(windows)]
    errors: list[Counter] = [Counter() for _ in range(windows)]
    in_flight = 0
    pending: set[asyncio.Future] = set()
    n = per * windows

    async with HttpClient(client, min(max_in_flight, 256), timeout) as c:
        async def fire(i: int, due: float) -> None:
            nonlocal in_flight
            start = time.perf_counter()
            err = await _one(c, method, url, bodies[i % len(bodies)] if bodies else None, headers, inspect)
            end = time.perf_counter()
            in_flight -= 1
            k, j = divmod(i, per)
            if err is None:
                lats[k][j] = (end - due) * 1000
                sent[k][j] = (end - start) * 1000
            else:
                errors[k][err] += 1

        cpu0 = time.process_time()
        t0 = time.perf_counter() + 0.05
        marks = [(t0, cpu0)]
        i = 0
        while i < n:
            now = time.perf_counter()
            while i < n and t0 + i / rate <= now:
                if in_flight >= max_in_flight:
                    errors[i // per]["client_backlog"] += 1
                else:
                    in_flight += 1
                    task = asyncio.ensure_future(fire(i, t0 + i / rate))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                i += 1
                if i % per == 0:  # window i // per - 1 has sent its last request
                    marks.append((time.perf_counter(), time.process_time()))
                    if on_window is not None:
                        on_window(i // per - 1)
            if i < n:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        if pending:
            await asyncio.gather(*pending)
        end, cpu_end = time.perf_counter(), time.process_time()
    for k, res in enumerate(results):
        ok = ~np.isnan(lats[k])
        res.requests = per
        res.errors = errors[k]
        res.ok = int(ok.sum())
        res.latencies_ms, res.sent_latencies_ms = lats[k][ok], sent[k][ok]
        res.seconds = (end if k == windows - 1 else marks[k + 1][0]) - marks[k][0]
        res.client_cpu_seconds = (cpu_end if k == windows - 1 else marks[k + 1][1]) - marks[k][1]
    return results


async def run_concurrency(url: str, bodies: Sequence[bytes] | None, *, concurrency: int, seconds: float,
                          max_requests: int = MAX_REQUESTS, name: str = "", method: str = "POST",
                          client: str = "raw", timeout: float = 5.0, headers: dict[str, str] | None = None,
                          inspect: Callable[[int, bytes], str | None] | None = None,
                          predictions_per_request: int = 1) -> LoadResult:
    """Closed loop: ``concurrency`` workers, until ``seconds`` or ``max_requests``."""
    check_loopback(url)
    if not 0 < concurrency <= 1024 or seconds > MAX_SECONDS or max_requests > MAX_REQUESTS:
        raise ValueError(f"concurrency 1..1024, at most {MAX_SECONDS:g} s and {MAX_REQUESTS} requests")
    headers = {"content-type": "application/json", **(headers or {})}
    res = LoadResult(name or url, "concurrency", concurrency, predictions_per_request=predictions_per_request)
    lats: list[float] = []
    errors: Counter = Counter()
    counter = iter(range(max_requests))
    async with HttpClient(client, concurrency, timeout) as c:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        stop_at = t0 + seconds

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() >= stop_at:
                    return
                start = time.perf_counter()
                err = await _one(c, method, url, bodies[i % len(bodies)] if bodies else None, headers, inspect)
                if err is None:
                    lats.append((time.perf_counter() - start) * 1000)
                else:
                    errors[err] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.seconds = time.perf_counter() - t0
        res.client_cpu_seconds = time.process_time() - cpu0
    res.errors = errors
    res.ok = len(lats)
    res.requests = res.ok + sum(errors.values())
    res.latencies_ms = res.sent_latencies_ms = np.array(lats)
    return res


def run(coro):
    """Run a load coroutine on uvloop when available, with the garbage collector paused.

    A full collection of a large client heap (the benchmark holds tens of thousands of
    generated records) stalls the sender for hundreds of milliseconds, and the open-loop
    latencies, measured from the due time, would charge that stall to the server. The
    run is bounded in requests and seconds, so its garbage stays bounded too."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:  # pragma: no cover
            return asyncio.run(coro)
    finally:
        if was_enabled:
            gc.enable()


# -- payloads ---------------------------------------------------------------------

def score_bodies(field_dicts: Sequence[dict[str, Any]], batch: int, count: int = 200) -> list[bytes]:
    """``count`` encoded /v1/score bodies of ``batch`` records each, cycling through ``field_dicts``."""
    out, k = [], 0
    for n in range(count):
        recs = []
        for _ in range(batch):
            recs.append({"id": f"imp-{k}", "fields": field_dicts[k % len(field_dicts)]})
            k += 1
        out.append(orjson.dumps({"request_id": f"load-{n}", "records": recs}))
    return out


def mlflow_bodies(field_dicts: Sequence[dict[str, Any]], batch: int, count: int = 200,
                  columns: Sequence[str] | None = None) -> list[bytes]:
    """The same records as ``dataframe_records`` bodies for ``mlflow models serve`` /invocations
    (``columns``: keep only these keys, e.g. the spec's input columns)."""
    out, k = [], 0
    for _ in range(count):
        recs = []
        for _ in range(batch):
            f = field_dicts[k % len(field_dicts)]
            recs.append({c: f.get(c) for c in columns} if columns else f)
            k += 1
        out.append(orjson.dumps({"dataframe_records": recs}))
    return out


def openrtb_bodies(requests: Sequence[dict[str, Any]], count: int = 200) -> list[bytes]:
    """``count`` encoded /v1/openrtb bodies, cycling through ``requests``."""
    return [orjson.dumps(requests[i % len(requests)]) for i in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    """Load a running server with generated traffic and print the result."""
    p = argparse.ArgumentParser(prog="python -m synthetic.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="server base URL (loopback only)")
    p.add_argument("--endpoint", default="/v1/score", help="path to load (default /v1/score)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rate", type=float, help="open loop: requests per second")
    g.add_argument("--concurrency", type=int, help="closed loop: concurrent workers")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=1, help="records per /v1/score request")
    p.add_argument("--impressions", type=int, default=2000, help="generated impressions to draw records from")
    p.add_argument("--client", choices=CLIENTS, default="raw")
    p.add_argument("--token", help="bearer token")
    args = p.parse_args(argv)
    check_loopback(args.url)
    imps = generate_impressions(args.impressions, seed=11)
    if args.endpoint == "/v1/openrtb":
        bodies = openrtb_bodies([i.bid_request for i in imps])
    else:
        bodies = score_bodies([i.fields for i in imps], args.batch)
    headers = {"authorization": f"Bearer {args.token}"} if args.token else None
    url = args.url.rstrip("/") + args.endpoint
    if args.concurrency:
        res = run(run_concurrency(url, bodies, concurrency=args.concurrency, seconds=args.seconds,
                                  client=args.client, headers=headers, predictions_per_request=args.batch))
    else:
        res = run(run_rate(url, bodies, rate=args.rate or 1000.0, seconds=args.seconds, client=args.client,
                           headers=headers, predictions_per_request=args.batch))
    print(res.line())
    print(json.dumps(res.summary()))
    return 0 if not res.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
