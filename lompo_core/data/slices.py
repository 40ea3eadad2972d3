"""A bag read in time slices by worker processes: messages parsed, images decoded and resized.

Reading a raw camera bag and resizing its frames cost about the same per frame, and neither can
share one process: OpenCV releases the GIL, but each call's Python glue must win it back from
the reading thread, so a resize *thread* beside the reader ran at half speed and slowed the
reader too (docs/convert.md, "Speed"). Here each worker process opens the bag itself and reads a
slice of it by log time (rosbags' ``start``/``stop``, which seeks through the bag's index), and
returns only what the converter needs: every message's stamps and value, and the frames already
at model size (12 KiB each instead of ~1 MB). The converter consumes the slices in order, so it
sees exactly the stream one pass over the bag would give.

Every frame is decoded, also those the alignment will thin away: a camera k times faster than the
commands costs k decodes a step, spread over the cores. The threaded converter before this one
decoded only the frames it used, and was as fast only at k = 6 (900 frames, two cores: docs).
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from lompo_core.data import bagread as br
from lompo_core.data.preprocess import Preprocessing, decode_image, jpeg_size, preprocess
from lompo_core.errors import BagError, ImageError, LompoError

T = TypeVar("T")

SLICE_FRAMES = 128  # camera frames per slice: amortises a task, small enough to balance
MAX_WORKERS = 8
BLOCK_FRAMES = 1024  # rows of one FrameRows block: 12 MiB at 64x64


@dataclass(frozen=True)
class SliceSpec:
    """What a worker reads: the messages of ``topics`` logged in [start, stop) ns."""

    bag: Path
    distro: str
    topics: dict[str, str]  # topic -> "image" | "action" | "reward" | "success"
    preprocessing: Preprocessing
    action_fields: tuple[str, ...] | None
    start: int
    stop: int


@dataclass(frozen=True)
class BadFrame:
    """A frame that could not be decoded; the error is raised only if the alignment uses it."""

    error: str


@dataclass
class Slice:
    """(topic, log time, header stamp, value) in the bag's order; an image's value is its row of
    ``frames`` or a BadFrame, a command's its float64 vector, a reward a float, success a bool."""

    events: list[tuple[str, int, int, Any]] = field(default_factory=list)
    frames: np.ndarray | None = None  # [n, size, size, 3] uint8
    in_ring: int = 0  # frames left in the shared ring instead (a worker's slice that fits)
    camera: tuple[int, int, str] | None = None  # width, height, encoding of the first frame


def plan(
    summary: br.BagSummary, spec: dict[str, Any], image_topic: str, workers: int
) -> list[SliceSpec]:
    """Cut the bag's time span into equal slices of at most about SLICE_FRAMES camera frames, in
    a multiple of ``workers`` so that the last round keeps every worker busy. A bag of one
    slice's frames or fewer is one slice: a single worker opens it, the others go on with the
    next bag."""
    workers = max(workers, 1)
    frames = summary.topics[image_topic].count
    n = 1 if frames <= SLICE_FRAMES else workers * -(-frames // (SLICE_FRAMES * workers))
    start, stop = summary.start, summary.stop
    edges = [start + (stop - start) * i // n for i in range(n + 1)]
    return [
        SliceSpec(start=a, stop=b, **spec) for a, b in zip(edges, edges[1:], strict=False) if b > a
    ]


class FrameRows:
    """Rows for a bag's frames, handed out in order from large blocks, so that the frames of
    consecutive steps are consecutive rows of one array and an episode's images are a view of
    them, not a copy (``align.stack_frames``). Copying a 600-step episode into a fresh array took
    10-14 ms at the end of a conversion, after the last frame, where nothing else runs (docs).
    A block lives as long as any frame in it is referenced."""

    def __init__(self, frame_shape: tuple[int, ...], block: int):
        self.frame_shape, self.block = frame_shape, block
        self._rows: np.ndarray | None = None
        self._used = 0

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` rows, [n, *frame_shape] uint8, to be filled by the caller."""
        if self._rows is None or self._used + n > len(self._rows):
            self._rows = np.empty((max(n, self.block), *self.frame_shape), np.uint8)
            self._used = 0
        self._used += n
        return self._rows[self._used - n : self._used]


def read_slice(
    bag: br.Bag, spec: SliceSpec, ring: np.ndarray | None = None, rows: FrameRows | None = None
) -> Slice:
    """Read, parse and decode one slice of an open bag (in a worker, or in-process). With
    ``ring`` (a worker's slot of shared memory), frames that fit are left there, not returned;
    otherwise they are returned in ``rows`` if given."""
    p = spec.preprocessing
    out = Slice()
    frames: list[np.ndarray] = []
    readers: dict[str, Any] = {}
    for topic, msgtype, t, raw in bag.raw_messages(list(spec.topics), spec.start, spec.stop):
        msg = bag.deserialize(raw, msgtype, topic)
        stamp = br.header_stamp(msg, t)
        kind = spec.topics[topic]
        value: Any
        if kind == "image":
            try:
                rgb = decode_image(msg, p)
                value = len(frames)
                frames.append(preprocess(rgb, p))
            except ImageError as exc:
                value = BadFrame(f"{bag.path}: topic {topic!r}: image at {stamp} ns: {exc}")
            else:
                if out.camera is None:  # the camera's size, not that of a reduced jpeg decode
                    jpeg = jpeg_size(msg.data) if hasattr(msg, "format") else None
                    w, h = jpeg or (int(rgb.shape[1]), int(rgb.shape[0]))
                    encoding = getattr(msg, "encoding", getattr(msg, "format", ""))
                    out.camera = (w, h, str(encoding))
        elif kind == "action":
            if msgtype not in readers:
                readers[msgtype] = br.action_reader(msgtype, spec.action_fields)[0]
            try:
                value = readers[msgtype](msg)
            except IndexError:
                raise BagError(
                    f"{bag.path}: action topic {topic!r}: a command has "
                    f"{len(msg.data)} values, fewer than the fields {list(spec.action_fields)} "
                    "need"
                ) from None
        elif kind == "reward":
            value = float(msg.data)
        else:
            value = bool(msg.data)
        out.events.append((topic, t, stamp, value))
    if frames and ring is not None and len(frames) <= len(ring):
        np.stack(frames, out=ring[: len(frames)])
        out.in_ring = len(frames)
    elif frames:
        out.frames = np.stack(frames, out=None if rows is None else rows.take(len(frames)))
    return out


def default_workers() -> int:
    """One worker per core this process may use (none on a single core: fork costs more).

    A container's CPU quota (docker --cpus, a Kubernetes limit) counts: more workers than the
    quota allows only contend (3 or 4 workers on 2 cores were slower than 2).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return min(cores, MAX_WORKERS) if cores > 1 else 0


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup quota allows this process (v2 ``cpu.max``, or v1 ``cfs_quota_us``)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


class SliceReader:
    """``with SliceReader(workers, first_bag) as r:`` then, per bag, ``r.summary(bag)`` and
    ``r.read(specs)``, which yields its slices in order.

    ``workers=0`` reads in this process. Workers fork when the reader opens, before this process
    opens any bag, so no open file or database is shared with them; a worker keeps the last two
    bags it was given open. Frames come back through a ring of shared memory, one slot per slice
    in flight (sending them through the pool's pipe made the whole conversion ~15% slower).
    Slices of the next bag start while the current bag's last ones are consumed (``then``), so
    the workers do not wait at each bag boundary.
    """

    def __init__(
        self,
        workers: int,
        first_bag: Path | None = None,
        distro: str = "jazzy",
        frame_shape: tuple[int, ...] = (64, 64, 3),
    ):
        if workers < 0:
            raise LompoError(f"workers must be >= 0, got {workers}")
        if workers and "fork" not in multiprocessing.get_all_start_methods():
            workers = 0  # a fresh interpreter per worker costs more than it saves here
        self.workers = workers
        self.distro = distro
        self._first = first_bag
        self._pool: ProcessPoolExecutor | None = None
        self._slots = 2 * workers  # slices in flight: bounds memory, keeps every worker busy
        # Twice a slice's frames: a camera that speeds up mid-bag still fits (else: the pipe).
        self._shape = (self._slots, 2 * SLICE_FRAMES, *frame_shape)
        self._ring: np.ndarray | None = None
        self._rows = FrameRows(frame_shape, BLOCK_FRAMES)
        self._summaries: dict[Path, Future[br.BagSummary]] = {}
        # Slice k (counted over the whole conversion) uses slot k % slots, and is submitted only
        # once fewer than `slots` slices are unconsumed: a slot is never written while in use.
        self._queue: deque[tuple[int, SliceSpec, Future[Slice]]] = deque()  # submitted
        self._todo: deque[SliceSpec] = deque()  # accepted, not yet submitted
        self._then: Callable[[], list[SliceSpec] | None] | None = None
        self._count = 0
        self._abandoned = False

    def __enter__(self) -> SliceReader:
        if self.workers:
            # Import rosbags here, once: forked workers inherit it instead of each spending
            # ~110 ms on it.
            br.Bag(self._first or Path("."), self.distro)
            # Anonymous shared memory, mapped before the fork: nothing named to leak.
            memory = mmap.mmap(-1, int(np.prod(self._shape)))
            self._ring = np.ndarray(self._shape, np.uint8, buffer=memory)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_worker_start,
                initargs=(self._first, self.distro, self._ring, os.getpid()),
            )
            # OpenCV's thread pool does not survive a fork: a child that uses (or resizes) the
            # pool it inherited waits forever for threads that are not there. Fork while it is
            # set to one thread, so that the workers never touch it; restore it here after.
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            # A signal caught while forking would run this process's handler (lompo_core.cli
            # raises KeyboardInterrupt) in the child too: block them until the child has set
            # its own; here they are delivered after the fork.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                self._pool.submit(int)  # fork them now; they open the first bag meanwhile
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                cv2.setNumThreads(threads)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        _close()

    def ask_summary(self, path: Path) -> None:
        """Have a worker read ``path``'s summary now, so that ``summary`` finds it ready."""
        if self._pool is not None and path not in self._summaries:
            self._summaries[path] = self._pool.submit(_summary, path, self.distro)

    def summary(self, path: Path) -> br.BagSummary:
        if self._pool is None:
            return _summary(path, self.distro)
        self.ask_summary(path)
        return _result(self._summaries[path], path)

    def read(
        self, specs: list[SliceSpec], then: Callable[[], list[SliceSpec] | None] | None = None
    ) -> Iterator[Slice]:
        """The slices of ``specs`` in order. ``then``: called once all of them are handed out,
        it returns the next bag's slices (None: wait), which the workers then start on; the next
        ``read`` must be for exactly those."""
        if self._pool is None or self._ring is None:
            for spec in specs:
                yield read_slice(_bag(spec.bag, spec.distro), spec, rows=self._rows)
            return
        accepted = [spec for _, spec, _ in self._queue] + list(self._todo)
        if self._abandoned or accepted != specs[: len(accepted)]:
            raise RuntimeError("SliceReader.read: not the slices started after the last bag")
        self._todo.extend(specs[len(accepted) :])
        self._then = then
        ring, slots = self._ring, self._slots
        done = False
        try:
            self._fill()
            for spec in specs:
                k, queued, future = self._queue.popleft()
                assert queued == spec
                result = _result(future, spec.bag)
                if result.in_ring:
                    result.frames = self._rows.take(result.in_ring)
                    np.copyto(result.frames, ring[k % slots, : result.in_ring])
                self._fill()
                yield result
            done = True
        finally:
            if not done:  # abandoned (an error downstream): the conversion stops
                for _, _, future in self._queue:
                    future.cancel()
                self._abandoned = True  # slices still running may yet write their slots

    def _fill(self) -> None:
        assert self._pool is not None
        while len(self._queue) < self._slots:
            if not self._todo and self._then is not None:
                then, self._then = self._then, None
                self._todo.extend(then() or ())
            if not self._todo:
                return
            spec = self._todo.popleft()
            k, self._count = self._count, self._count + 1
            self._queue.append((k, spec, self._pool.submit(_read, spec, k % self._slots)))


def _result(future: Future[T], bag: Path) -> T:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise BagError(
            f"{bag}: a worker process reading it died ({exc}); out of memory? --workers 0 reads "
            "in the converting process"
        ) from None


# -- in whichever process reads: a worker, or this one with workers=0 ----------------------------
_open: dict[Path, br.Bag] = {}  # the bags this process has open, least recently used first
KEEP_OPEN = 2  # the bag being read and the next one, whose summary was asked for early


def _bag(path: Path, distro: str) -> br.Bag:
    bag = _open.pop(path, None)
    if bag is None:
        bag = br.Bag(path, distro).__enter__()
        while len(_open) >= KEEP_OPEN:
            _open.pop(next(iter(_open))).__exit__(None, None, None)
    _open[path] = bag
    return bag


def _close() -> None:
    while _open:
        _open.popitem()[1].__exit__(None, None, None)


def _summary(path: Path, distro: str) -> br.BagSummary:
    return _bag(path, distro).summary()


def _read(spec: SliceSpec, slot: int) -> Slice:
    assert _ring is not None
    return read_slice(_bag(spec.bag, spec.distro), spec, _ring[slot])


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed megabytes for reuse instead of handing them back.

    By default glibc gives a block of 128 KiB or more its own mmap and returns the top of its heap
    to the kernel once more than twice that is free there (both thresholds follow the largest block
    freed so far). With two camera frames alive at once (a message's bytes and its decoded array)
    the heap's top goes back after every frame, and every frame faults its pages in again: in a
    fresh process rosbags read a 600-frame sqlite3 bag 3-4x slower than after one large free, and
    a fresh ``lompo convert`` of it with two workers took 527-586 ms instead of 430-457. The cost:
    up to 64 MiB of freed memory stays with the process. Not glibc (musl, macOS): nothing to do.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest
        libc.mallopt(m_trim_threshold, 64 << 20)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _die_with(parent: int) -> None:
    """End this worker when the converting process ends, even by SIGKILL (Linux only).

    Otherwise a killed ``lompo convert`` leaves its workers running, holding the caller's pipes.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1  # linux/prctl.h
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def _worker_start(first_bag: Path | None, distro: str, ring: np.ndarray, parent: int) -> None:
    global _ring
    _die_with(parent)
    _ring = ring
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # Not the parent's handlers (lompo_core.cli raises KeyboardInterrupt): a worker just ends.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if first_bag is not None:
        with contextlib.suppress(BagError):  # the summary will report it
            _bag(first_bag, distro)
