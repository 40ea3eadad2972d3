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
from collections.abc import Iterator
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
    a multiple of ``workers`` so that the last round keeps every worker busy."""
    workers = max(workers, 1)
    frames = summary.topics[image_topic].count
    n = workers * max(1, -(-frames // (SLICE_FRAMES * workers)))
    start, stop = summary.start, summary.stop
    edges = [start + (stop - start) * i // n for i in range(n + 1)]
    return [
        SliceSpec(start=a, stop=b, **spec) for a, b in zip(edges, edges[1:], strict=False) if b > a
    ]


def read_slice(bag: br.Bag, spec: SliceSpec, ring: np.ndarray | None = None) -> Slice:
    """Read, parse and decode one slice of an open bag (in a worker, or in-process). With
    ``ring`` (a worker's slot of shared memory), frames that fit are left there, not returned."""
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
        out.frames = np.stack(frames)
    return out


def default_workers() -> int:
    """One worker per core this process may use (none on a single core: fork costs more)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores, MAX_WORKERS) if cores > 1 else 0


class SliceReader:
    """``with SliceReader(workers, first_bag) as r:`` then ``r.summary(bag)`` and
    ``r.read(specs)``, which yields the slices in order.

    ``workers=0`` reads in this process. Workers fork when the reader opens, before this process
    opens any bag, so no open file or database is shared with them; a worker opens each bag it is
    given once, and keeps it open for that bag's next slices. Frames come back through a ring of
    shared memory, one slot per slice in flight (sending them through the pool's pipe made the
    whole conversion ~15% slower).
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
        self._early: dict[Path, Future[br.BagSummary]] = {}  # summaries asked for ahead

    def __enter__(self) -> SliceReader:
        if self.workers:
            # Import rosbags and build the typestore here, once: forked workers inherit them
            # instead of each spending ~150 ms on it.
            br.Bag(self._first or Path("."), self.distro)
            # Anonymous shared memory, mapped before the fork: nothing named to leak.
            memory = mmap.mmap(-1, int(np.prod(self._shape)))
            self._ring = np.ndarray(self._shape, np.uint8, buffer=memory)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_worker_start,
                initargs=(self._first, self.distro, self._ring),
            )
            # OpenCV's thread pool does not survive a fork: a child that uses (or resizes) the
            # pool it inherited waits forever for threads that are not there. Fork while it is
            # set to one thread, so that the workers never touch it; restore it here after.
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                self._pool.submit(int)  # fork them now; they open the first bag meanwhile
            finally:
                cv2.setNumThreads(threads)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        _close()

    def summary(self, path: Path) -> br.BagSummary:
        if self._pool is None:
            return _summary(path, self.distro)
        future = self._early.pop(path, None) or self._pool.submit(_summary, path, self.distro)
        return _result(future, path)

    def read(self, specs: list[SliceSpec], then: Path | None = None) -> Iterator[Slice]:
        """The slices of ``specs`` in order. ``then``: the bag to convert next, whose summary a
        worker fetches once the last slice is handed out, so that it is ready when asked for."""
        if self._pool is None or self._ring is None:
            for spec in specs:
                yield read_slice(_bag(spec.bag, spec.distro), spec)
            return
        # Slice k uses slot k % slots; it is submitted only after slice k - slots was consumed
        # (and its frames copied out), so a slot is never written while still being read.
        pool, slots, ring = self._pool, self._slots, self._ring
        queue: deque[tuple[int, Future[Slice]]] = deque()
        pending = iter(enumerate(specs))

        def submit_next() -> None:
            item = next(pending, None)
            if item is not None:
                k, spec = item
                queue.append((k, pool.submit(_read, spec, k % slots)))
            elif then is not None and then not in self._early:
                self._early[then] = pool.submit(_summary, then, self.distro)

        try:
            for _ in range(slots):
                submit_next()
            while queue:
                k, future = queue.popleft()
                result = _result(future, specs[k].bag)
                if result.in_ring:
                    result.frames = ring[k % slots, : result.in_ring].copy()
                submit_next()
                yield result
        finally:
            for _, future in queue:
                future.cancel()


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


def _worker_start(first_bag: Path | None, distro: str, ring: np.ndarray) -> None:
    global _ring
    _ring = ring
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if first_bag is not None:
        with contextlib.suppress(BagError):  # the summary will report it
            _bag(first_bag, distro)
