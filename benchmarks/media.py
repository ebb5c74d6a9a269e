"""Media end to end: upload -> send -> received and stored -> download, for images and videos of growing size,
over 10 pairs of sandbox sessions, with the peak RSS of the API and of the worker(s) (target: flat as files
grow, i.e. every step streams).

Everything runs as it is deployed, in processes of their own on one PostgreSQL: `python -m zapgate api` (the
API alone) and `--workers` `python -m zapgate worker` processes. This process plays the users: it creates a
client with the admin key, links 10 sender and 10 receiver sandbox sessions (s0..s9, r0..r9) by QR code, and
for each size class sends `--messages` files, each pair one at a time and the 10 pairs at once:

1. `POST /whatsapp/media?sessionId=sN` (multipart) uploads the file;
2. `POST /whatsapp/messages` sends it by its id to rN's phone (the API prepares it: sniffed, probed, a
   thumbnail made, stored again as the message's file);
3. the worker sends it through the sandbox network's media server; rN's session downloads it into the media
   store and announces `message-received` with `media.url` (read here over SSE, `GET /whatsapp/stream`);
4. `GET media.url` (the signed link) downloads it; its SHA-256 must be the file's.

Files (made once, cached in /tmp/zapgate-bench-media): JPEGs of ~100 KB, 1 MB and 4.5 MB (a gradient with
Gaussian noise at quality 92, about 0.5 byte a pixel as a phone's photo: 4.5 MB is ~9 megapixels), sent as
they are; MP4s (H.264 yuv420p 640x360 at ~2 Mbit/s, AAC stereo) of 1, 8 and 15.5 MB, sent as they are.

Reported per class: messages/s and MB/s (file bytes delivered, 1 MB = 10^6 bytes) from the first upload to
the last download, the latency of one message (upload start -> download done) p50/p95 and its steps, the CPU
of the API, the worker(s), the database's PostgreSQL backends and this process, and the RSS of the API process
and of the worker processes (summed, children included) sampled every 50 ms from a thread: its baseline
(after a warm-up of 10 small images and 10 small videos, which loads the codecs and fills the pools), its peak
during the class, and the difference. RSS is a high-water mark the allocator rarely gives back, so each class
runs on fresh processes of its own (the sessions stay linked; the new worker takes them over), unless
`--keep-processes`. The verdict compares the two largest classes of each kind: a step that streams costs the
same memory whatever the file's size, once files span a few chunks (1 MiB in the store and the sandbox).

    PYTHONPATH=src .venv/bin/python benchmarks/media.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    PYTHONPATH=src .venv/bin/python benchmarks/media.py --classes image-4.5m,video-15.5m --messages 20

Without --database-url it runs against a fresh embedded PostgreSQL under /tmp; with it, it creates a fresh
database `zg_bench_<random>` on that server and drops it at the end. The child processes import zapgate from
the `src` folder beside this script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from http_send import PostgresPids, Server, cpu_seconds, start  # benchmarks/, beside this script
from sessions_throughput import Workers
from support import MONITOR_APP_NAME, free_port, percentile, run_on, verdict

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"  # what the child processes import
CACHE = Path("/tmp/zapgate-bench-media")  # the files, made once
CLIENT = "bench"
SENDER_PHONE = 5511900000000  # + n: the phone of sender sN
RECEIVER_PHONE = 5511910000000  # + n: the phone of receiver rN
SAMPLE_EVERY = 0.05  # seconds between two RSS samples
ARRIVAL_TIMEOUT = 300.0  # seconds a sent file may take to be announced on the receiving side
STARTUP_TIMEOUT = 60.0  # seconds for the sessions to show QR codes, then to connect
SETTLE = 3.0  # seconds left between classes (the last downloads' buffers go, the pools idle)
MB = 1_000_000
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class SizeClass:
    """Files of one kind and size."""

    name: str
    kind: str  # image | video
    size: int  # bytes aimed at
    messages: int  # sent by default: ~20-40 s on the 2-core development machine

    @property
    def mime(self) -> str:
        return "image/jpeg" if self.kind == "image" else "video/mp4"

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}.{'jpg' if self.kind == 'image' else 'mp4'}"


CLASSES = {
    c.name: c
    for c in (
        SizeClass("image-100k", "image", 100_000, 300),
        SizeClass("image-1m", "image", 1_000_000, 150),
        SizeClass("image-4.5m", "image", 4_500_000, 60),
        SizeClass("video-1m", "video", 1_000_000, 150),
        SizeClass("video-8m", "video", 8_000_000, 60),
        SizeClass("video-15.5m", "video", 15_500_000, 40),
    )
}


# -- the files --------------------------------------------------------------------------------------------


def make_image(size: int) -> bytes:
    """A JPEG of about `size` bytes: a gradient with Gaussian noise (sigma 16) at quality 92."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(size)
    pixels = size / 0.48  # bytes per pixel of such a picture, measured
    data = b""
    for _ in range(5):
        width = max(16, int(math.sqrt(pixels * 4 / 3)))
        height = width * 3 // 4
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
        noisy = np.clip(base + rng.normal(0, 16, (height, width, 3)), 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(noisy).save(out, "JPEG", quality=92)
        data = out.getvalue()
        if abs(len(data) - size) < size * 0.02:
            break
        pixels *= size / len(data)
    return data


def make_video(path: Path, size: int) -> None:
    """An MP4 (H.264 yuv420p 640x360 25 fps ~2 Mbit/s, AAC stereo 44.1 kHz) of about `size` bytes."""
    import av
    import numpy as np

    rng = np.random.default_rng(size)
    width, height, fps, rate = 640, 360, 25, 44_100
    y, x = np.mgrid[0:height, 0:width]
    written = frame_no = samples = 0
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        video.width, video.height, video.pix_fmt, video.bit_rate = width, height, "yuv420p", 2_000_000
        audio = out.add_stream("aac", rate=rate, layout="stereo")
        audio.bit_rate = 128_000
        while written < size * 0.985:  # the encoders' last frames and the index make up the rest
            shift = frame_no * 4
            base = np.stack([(x + shift) % 256, (y + shift) % 256, (x + y) % 256], -1).astype(np.float32)
            picture = np.clip(base + rng.normal(0, 24, (height, width, 3)), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = frame_no
            frame_no += 1
            for packet in video.encode(frame):
                out.mux(packet)
                written += packet.size
            while samples < frame_no * rate // fps:
                t = np.arange(samples, samples + 1024) / rate
                tone = (np.sin(2 * np.pi * 440 * t) * 0.2).astype(np.float32)
                sound = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                sound.sample_rate, sound.pts = rate, samples
                samples += 1024
                for packet in audio.encode(sound):
                    out.mux(packet)
                    written += packet.size
        for stream in (video, audio):
            for packet in stream.encode():
                out.mux(packet)


def media_file(cls: SizeClass) -> bytes:
    """The file of `cls`, made the first time and kept in CACHE."""
    if not cls.path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        partial_path = cls.path.with_suffix(".part")
        if cls.kind == "image":
            partial_path.write_bytes(make_image(cls.size))
        else:
            make_video(partial_path, cls.size)
        partial_path.rename(cls.path)
        print(f"made {cls.path} ({cls.path.stat().st_size / MB:.2f} MB) in {time.perf_counter() - began:.1f} s")
    return cls.path.read_bytes()


def describe_file(cls: SizeClass, data: bytes) -> str:
    if cls.kind == "image":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return f"{image.width}x{image.height}"
    import av

    with av.open(io.BytesIO(data), "r") as container:
        return f"{(container.duration or 0) / 1e6:.0f} s"


# -- memory ------------------------------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS of process groups (each process with its children, summed) from a thread."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self._lock = threading.Lock()
        self._peaks = dict.fromkeys(groups, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> dict[str, int]:
        """Each group's RSS now (bytes)."""
        return {name: sum(_tree_rss(p) for p in procs) for name, procs in self._groups.items()}

    def reset(self) -> dict[str, int]:
        """Start a new peak from now; return the RSS now."""
        current = self.now()
        with self._lock:
            self._peaks = dict(current)
        return current

    def peaks(self) -> dict[str, int]:
        with self._lock:
            return dict(self._peaks)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            current = self.now()
            with self._lock:
                for name, value in current.items():
                    self._peaks[name] = max(self._peaks[name], value)


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        total += process.memory_info().rss
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
    return total


# -- the service -------------------------------------------------------------------------------------------


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without zapgate's variables, importing zapgate from SRC, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAPGATE_", "WHATSAPP_")) and k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra)
    return env


def sender(n: int) -> str:
    return f"s{n}"


def receiver(n: int) -> str:
    return f"r{n}"


async def link_sessions(http: httpx.AsyncClient, pairs: int) -> None:
    """Create the senders and receivers, let a simulated phone scan each QR code, wait until all connect."""
    phones = {sender(n): SENDER_PHONE + n for n in range(pairs)} | {
        receiver(n): RECEIVER_PHONE + n for n in range(pairs)
    }
    for sid in phones:
        made = await http.post("/whatsapp/session", json={"sessionId": sid, "engine": "sandbox"})
        made.raise_for_status()

    async def states() -> dict[str, dict[str, Any]]:
        listed = (await http.get("/whatsapp/sessions")).json()["sessions"]
        return {s["sessionId"]: s for s in listed}

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not all(state.get("qrCode") for state in (await states()).values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the sessions showed no QR code in time")
        await asyncio.sleep(0.2)
    for sid, phone in phones.items():
        scanned = await http.post(f"/whatsapp/sandbox/sessions/{sid}/scan", json={"phoneNumber": str(phone)})
        scanned.raise_for_status()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not all(s["status"] == "connected" for s in (await states()).values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the sessions did not connect in time")
        await asyncio.sleep(0.2)


class Arrivals:
    """message-received events, handed to whoever waits for their caption."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.unexpected = 0

    def expect(self, token: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        return future

    def forget(self, token: str) -> None:
        self._waiting.pop(token, None)

    def arrived(self, body: dict[str, Any]) -> None:
        kind = body.get("messageType")
        part = (body.get("message") or {}).get(kind) or {}
        future = self._waiting.pop(str(part.get("caption")), None)
        if future is None:
            self.unexpected += 1
        elif not future.done():
            future.set_result(body)


async def read_events(base: str, key: str, arrivals: Arrivals, ready: asyncio.Event) -> None:
    """Follow the client's SSE stream, handing message-received events to `arrivals`."""
    async with (
        httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=None) as http,
        http.stream("GET", "/whatsapp/stream") as response,
    ):
        response.raise_for_status()
        ready.set()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "message-received":
                arrivals.arrived(json.loads(line[5:]))
            elif not line:
                event = ""


# -- one message, one class --------------------------------------------------------------------------------


class Failed(Exception):
    """A message that did not make it (its step and the answer)."""


@dataclass(slots=True)
class Outcome:
    started: float
    finished: float
    steps: tuple[float, ...] = ()  # seconds: upload, accept, arrival, download
    error: str | None = None


async def one_message(
    http: httpx.AsyncClient, arrivals: Arrivals, cls: SizeClass, data: bytes, sha256: str, pair: int, token: str
) -> Outcome:
    """Upload, send, wait for its arrival, download and check one file; return the timings or the error."""
    arrival = arrivals.expect(token)
    marks = [time.perf_counter()]
    try:
        upload = await http.post(
            "/whatsapp/media",
            params={"sessionId": sender(pair)},
            files={"file": (cls.path.name, data, cls.mime)},
        )
        if upload.status_code != 201:
            raise Failed(f"upload {upload.status_code}: {upload.text[:200]}")
        marks.append(time.perf_counter())
        body = {
            "sessionId": sender(pair),
            "to": str(RECEIVER_PHONE + pair),
            "type": cls.kind,
            cls.kind: {"id": upload.json()["id"], "caption": token},
        }
        sent = await http.post("/whatsapp/messages", json=body)
        if sent.status_code != 202:
            raise Failed(f"send {sent.status_code}: {sent.text[:200]}")
        marks.append(time.perf_counter())
        event = await asyncio.wait_for(arrival, ARRIVAL_TIMEOUT)
        media = event.get("media") or {}
        if media.get("status") != "stored" or not media.get("url"):
            raise Failed(f"arrived without its file: {media.get('status')} {media.get('error')}")
        marks.append(time.perf_counter())
        digest, size = hashlib.sha256(), 0
        async with http.stream("GET", media["url"]) as download:
            if download.status_code != 200:
                raise Failed(f"download {download.status_code}")
            async for chunk in download.aiter_bytes():
                digest.update(chunk)
                size += len(chunk)
        if digest.hexdigest() != sha256:
            raise Failed(f"downloaded {size} bytes whose SHA-256 differs from the file's ({len(data)} bytes)")
        marks.append(time.perf_counter())
    except (Failed, httpx.HTTPError, TimeoutError) as exc:
        arrivals.forget(token)
        return Outcome(marks[0], time.perf_counter(), error=f"{type(exc).__name__}: {exc}")
    return Outcome(marks[0], marks[-1], tuple(b - a for a, b in itertools.pairwise(marks)))


@dataclass(slots=True)
class ClassResult:
    cls: SizeClass
    file_size: int
    shape: str  # an image's pixels, a video's duration
    outcomes: list[Outcome]
    seconds: float
    rss_idle: dict[str, int]  # bytes per group: its processes just started, sessions connected
    rss_baseline: dict[str, int]  # after the warm-up
    rss_before: dict[str, int]  # just before the class
    rss_peak: dict[str, int]  # during the class
    cpu: dict[str, float]  # cores busy on average
    load: tuple[float, float]
    ok: list[Outcome] = field(init=False)

    def __post_init__(self) -> None:
        self.ok = [o for o in self.outcomes if o.error is None]

    def growth(self, group: str) -> float:
        """The group's peak RSS over its baseline, MiB."""
        return (self.rss_peak[group] - self.rss_baseline[group]) / MIB


async def run_class(
    http: httpx.AsyncClient,
    arrivals: Arrivals,
    cls: SizeClass,
    messages: int,
    pairs: int,
    sampler: RssSampler,
    groups: dict[str, list[int]],
) -> ClassResult:
    """Send `messages` files of `cls`, each pair one at a time, every pair at once.

    `groups`: the processes whose CPU is counted (the RSS is the sampler's), by name.
    """
    data = media_file(cls)
    sha256 = hashlib.sha256(data).hexdigest()
    shares = [list(range(n, messages, pairs)) for n in range(pairs)]

    async def pair_loop(pair: int) -> list[Outcome]:
        return [
            await one_message(http, arrivals, cls, data, sha256, pair, f"{cls.name}#{n}-{secrets.token_hex(3)}")
            for n in shares[pair]
        ]

    load_before = os.getloadavg()[0]
    before = sampler.reset()
    cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    began = time.perf_counter()
    outcomes = [o for share in await asyncio.gather(*(pair_loop(p) for p in range(pairs))) for o in share]
    seconds = time.perf_counter() - began
    cpu = {name: (cpu_seconds(pids) - cpu_before[name]) / seconds for name, pids in groups.items()}
    return ClassResult(
        cls,
        len(data),
        describe_file(cls, data),
        outcomes,
        seconds,
        rss_idle={},
        rss_baseline={},
        rss_before=before,
        rss_peak=sampler.peaks(),
        cpu=cpu,
        load=(load_before, os.getloadavg()[0]),
    )


# -- the report --------------------------------------------------------------------------------------------


def mib(value: float) -> float:
    return value / MIB


def print_report(results: Sequence[ClassResult], args: argparse.Namespace) -> None:
    print()
    print(
        f"{'class':<12} {'file':>17} {'ok/sent':>8} {'msg/s':>6} {'MB/s':>6} {'p50 s':>6} {'p95 s':>6}   "
        f"{'API RSS MiB base/peak/+':>23}   {'worker RSS MiB base/peak/+':>26}"
    )
    for r in results:
        latencies = [o.finished - o.started for o in r.ok]
        delivered = len(r.ok) * r.file_size / MB
        rss = [
            f"{mib(r.rss_baseline[g]):.0f} / {mib(r.rss_peak[g]):.0f} / {r.growth(g):+.0f}" for g in ("api", "worker")
        ]
        print(
            f"{r.cls.name:<12} {r.file_size / MB:>6.2f} MB {r.shape:>9} {len(r.ok):>3}/{len(r.outcomes):<4} "
            f"{len(r.ok) / r.seconds:>6.2f} {delivered / r.seconds:>6.1f} {percentile(latencies, 0.5):>6.2f} "
            f"{percentile(latencies, 0.95):>6.2f}   {rss[0]:>23}   {rss[1]:>26}"
        )
    print()
    print(
        f"{'class':<12} {'upload':>7} {'accept':>7} {'arrive':>7} {'download':>8}   "
        f"{'CPU cores: API':>14} {'worker':>6} {'PostgreSQL':>10} {'benchmark':>9}   "
        f"{'RSS MiB at start: API, worker':>29}   {'load':>9}"
    )
    for r in results:
        steps = " ".join(f"{percentile([o.steps[i] for o in r.ok], 0.5):>7.2f}" for i in range(4))
        cpu = f"{r.cpu['api']:>14.2f} {r.cpu['worker']:>6.2f} {r.cpu['postgres']:>10.2f} {r.cpu['benchmark']:>9.2f}"
        idle = f"{mib(r.rss_idle['api']):.0f}, {mib(r.rss_idle['worker']):.0f}"
        print(f"{r.cls.name:<12} {steps}    {cpu}   {idle:>29}   {r.load[0]:>4.1f}-{r.load[1]:<4.1f}")
    print("(p50 of each step, seconds: upload, send accepted, arrival announced, download; CPU: cores busy)")
    errors = [(r.cls.name, o.error) for r in results for o in r.outcomes if o.error]
    if errors:
        print(f"\n{len(errors)} messages failed; the first ones:")
        for name, error in errors[:5]:
            print(f"  {name}: {error}")

    where = "fresh processes for each class" if not args.keep_processes else "the same processes for every class"
    print(
        f"\nRSS as files grow: peak over the baseline (after the warm-up), MiB; {args.workers} worker process(es), "
        f"{args.pairs} transfers in flight, {where}. Flat: from the second largest files to the largest, the peak "
        "grows by less than half a file's growth per transfer in flight (a step holding each file whole grows by "
        "a file's growth or more per transfer; a streaming one by nothing once files span a few 1 MiB chunks)."
    )
    for kind in ("image", "video"):
        runs = sorted((r for r in results if r.cls.kind == kind), key=lambda r: r.file_size)
        if len(runs) < 2:
            continue
        middle, large = runs[-2], runs[-1]
        step = (large.file_size - middle.file_size) / MIB
        for group, label in (("api", "API"), ("worker", "worker(s)")):
            series = ", ".join(f"{r.growth(group):+.0f} at {r.file_size / MB:.3g} MB" for r in runs)
            rise = large.growth(group) - middle.growth(group)
            per_transfer = rise / args.pairs
            print(
                f"  {kind}s, {label:<9}: {series}; {middle.file_size / MB:.3g} -> {large.file_size / MB:.3g} MB: "
                f"{rise:+.0f} MiB, {per_transfer:+.1f} MiB per transfer for files {step:.1f} MiB larger: flat "
                f"{verdict(per_transfer < step / 2)}"
            )


# -- the benchmark -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Running:
    """The service's processes: the API and the worker(s)."""

    api: Server
    workers: list[int]  # pids
    ids: set[str]  # their worker ids in the registry

    @property
    def groups(self) -> dict[str, list[int]]:
        return {"api": [self.api.proc.pid], "worker": self.workers}


@contextlib.asynccontextmanager
async def service(
    url: str, env: dict[str, str], monitor: asyncpg.Connection, folder: Path, workers: int
) -> AsyncIterator[Running]:
    """`python -m zapgate api` answering and `workers` `python -m zapgate worker` processes announced."""
    fleet = Workers(url, monitor, folder, lease_ttl=10.0, extra_env={"PYTHONPATH": env["PYTHONPATH"]})
    api = await start("api", [sys.executable, "-m", "zapgate", "api"], env, folder, int(env["ZAPGATE_PORT"]))
    try:
        await api.wait_answering("/health")
        started = [await fleet.start(capacity=100) for _ in range(workers)]
        yield Running(api, [w.pid for w in started], {w.worker_id for w in started})
    finally:
        await fleet.close()
        await api.stop()


async def all_connected(monitor: asyncpg.Connection, running: Running, count: int) -> None:
    """Wait until the `count` sessions are hosted by the running worker(s) and connected."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        rows = await monitor.fetch("SELECT status, worker_id FROM zapgate.placements")
        if len(rows) == count and all(r["status"] == "connected" and r["worker_id"] in running.ids for r in rows):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sessions are not all connected again: {[r['status'] for r in rows]}")
        await asyncio.sleep(0.2)


async def measure(
    base: str,
    key: str,
    monitor: asyncpg.Connection,
    running: Running,
    classes: Sequence[SizeClass],
    args: argparse.Namespace,
) -> list[ClassResult]:
    """On running processes: follow the events, warm up, then run `classes` one after the other."""
    postgres = PostgresPids(monitor, await monitor.fetchval("SELECT current_database()"))
    arrivals = Arrivals()
    ready = asyncio.Event()
    reader = asyncio.create_task(read_events(base, key, arrivals, ready))
    sampler = RssSampler(running.groups)
    limits = httpx.Limits(max_connections=args.pairs * 2, max_keepalive_connections=args.pairs * 2)
    results = []
    try:
        await asyncio.wait_for(ready.wait(), 10)
        sampler.start()
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=120, limits=limits) as http:
            await asyncio.sleep(SETTLE)
            idle = sampler.now()
            groups = {**running.groups, "postgres": await postgres.backends(), "benchmark": [os.getpid()]}
            for cls in WARMUPS:  # the codecs loaded, the pools filled: not what the classes measure
                warm = await run_class(http, arrivals, cls, args.pairs, args.pairs, sampler, groups)
                if len(warm.ok) != len(warm.outcomes):
                    raise RuntimeError(f"warm-up failed: {[o.error for o in warm.outcomes if o.error][:3]}")
            await asyncio.sleep(SETTLE)
            baseline = sampler.now()
            groups["postgres"] = await postgres.backends()  # the pools are full now
            for cls in classes:
                result = await run_class(
                    http, arrivals, cls, args.messages or cls.messages, args.pairs, sampler, groups
                )
                result.rss_idle, result.rss_baseline = idle, baseline
                results.append(result)
                print(
                    f"  {cls.name}: {len(result.ok)}/{len(result.outcomes)} in {result.seconds:.1f} s, peak RSS "
                    f"API {mib(result.rss_peak['api']):.0f} MiB ({result.growth('api'):+.0f}), worker(s) "
                    f"{mib(result.rss_peak['worker']):.0f} MiB ({result.growth('worker'):+.0f})",
                    flush=True,
                )
                await asyncio.sleep(SETTLE)
        if arrivals.unexpected:
            print(f"  {arrivals.unexpected} message-received events matched no message sent")
    finally:
        sampler.stop()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await reader
    return results


WARMUPS = (CLASSES["image-100k"], CLASSES["video-1m"])


async def benchmark(url: str, *, args: argparse.Namespace) -> None:
    classes = [CLASSES[name] for name in args.classes]
    for cls in {c.name: c for c in (*classes, *WARMUPS)}.values():
        media_file(cls)
    load_before = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="zg-bench-media-", dir="/tmp"))
    admin_key = secrets.token_urlsafe(24)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = child_env(
        {
            "DATABASE_URL": url,
            "ZAPGATE_PORT": str(port),
            "ZAPGATE_ADMIN_KEY": admin_key,
            "ZAPGATE_LOG_LEVEL": "warning",
            "ZAPGATE_DEFAULT_ENGINE": "sandbox",
            "ZAPGATE_PUBLIC_URL": base,  # media.url is absolute, as a webhook consumer gets it
            "ZAPGATE_SEND_RATE": "0",  # no limit: the benchmark's sends are never refused
            "ZAPGATE_REQUEST_RATE": "0",
        }
    )
    monitor = await asyncpg.connect(url, server_settings={"application_name": MONITOR_APP_NAME})
    rounds = [classes] if args.keep_processes else [[cls] for cls in classes]
    results: list[ClassResult] = []
    key = ""
    try:
        for round_classes in rounds:
            async with service(url, env, monitor, folder, args.workers) as running:
                async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                    if not key:
                        made = await http.post(
                            "/admin/clients", headers={"X-API-Key": admin_key}, json={"clientId": CLIENT}
                        )
                        made.raise_for_status()
                        key = made.json()["apiKey"]
                        http.headers["X-API-Key"] = key
                        began = time.perf_counter()
                        await link_sessions(http, args.pairs)
                        print(f"{args.pairs * 2} sandbox sessions linked in {time.perf_counter() - began:.1f} s")
                    else:
                        await all_connected(monitor, running, args.pairs * 2)
                results += await measure(base, key, monitor, running, round_classes, args)
    finally:
        await monitor.close()
        shutil.rmtree(folder, ignore_errors=True)

    load_after = os.getloadavg()
    print(
        f"\n{os.cpu_count()} CPUs; load average (1/5/15 min) before {' '.join(f'{v:.1f}' for v in load_before)}, "
        f"after {' '.join(f'{v:.1f}' for v in load_after)}; {args.workers} worker process(es); {args.pairs} pairs; "
        "media store: PostgreSQL (1 MiB chunks)"
    )
    print_report(results, args)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use (a fresh database is created and dropped); default: embedded server",
    )
    parser.add_argument(
        "--classes",
        default=",".join(CLASSES),
        help=f"size classes to run, in order (default: all: {','.join(CLASSES)})",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=0,
        help="messages per class (default: per class, about 20-40 s each: "
        + ", ".join(f"{c.name} {c.messages}" for c in CLASSES.values())
        + ")",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--pairs", type=int, default=10, help="sender/receiver session pairs (default 10)")
    parser.add_argument(
        "--keep-processes",
        action="store_true",
        help="run every class on the same API and worker processes (default: fresh ones for each class)",
    )
    args = parser.parse_args(argv)
    args.classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    unknown = [name for name in args.classes if name not in CLASSES]
    if unknown:
        parser.error(f"unknown classes {unknown}: choose from {', '.join(CLASSES)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_on(args.database_url, partial(benchmark, args=args))


if __name__ == "__main__":
    main()
