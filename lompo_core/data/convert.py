"""``lompo convert``: robot bags -> the episode dataset of DESIGN.md, streaming and atomic.

Each bag is read once, in log-time order, by worker processes that each take a time slice of it
and return its messages' stamps and values with the frames already preprocessed (``slices.py``).
Here the slices are consumed in order: messages are put back in header-stamp order within a short
look-back, aligned (``align.py``), and each episode is written as soon as it ends, so memory does
not grow with the bag. The dataset is built in a hidden folder beside ``out`` and renamed into place
at the end: a failure leaves no partial dataset behind.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lompo_core.data import bagread as br
from lompo_core.data.align import AlignedEpisode, Aligner, episode_arrays
from lompo_core.data.convert_config import ConvertConfig
from lompo_core.data.dataset import (
    META_FILE,
    SCHEMA_VERSION,
    EpisodeDataset,
    content_hash,
    save_episode,
    write_meta,
)
from lompo_core.data.preprocess import Preprocessing
from lompo_core.data.slices import (
    BadFrame,
    Slice,
    SliceReader,
    SliceSpec,
    default_workers,
    plan,
)
from lompo_core.errors import BagError, DatasetError, LompoError

CLIP_EPS = 1e-6  # a command at exactly the limit is not "clipped" after float rounding
RATE_PROBE = 30  # action messages read to infer the control rate (median period)
RATE_MISMATCH = 0.1  # relative rate difference between bags that is refused
WRITES_AHEAD = 2  # episodes handed to the writer thread and not yet on disk


@dataclass
class SourceReport:
    """One converted bag, as recorded in meta.json["sources"]."""

    path: str
    format: str
    size_bytes: int
    fingerprint: str  # identifies the recording for --append (bagread.bag_fingerprint)
    episodes: int = 0
    steps: int = 0
    frames: int = 0
    frames_used: int = 0
    commands: int = 0
    action_values: int = 0
    clipped_values: int = 0
    dropped_episodes: int = 0
    image_type: str = ""
    image_encoding: str = ""
    image_size: list[int] = field(default_factory=list)
    action_type: str = ""
    action_dim: int = 0
    action_rate_hz: float | None = None
    ends: dict[str, int] = field(default_factory=dict)


@dataclass
class ConvertReport:
    out: Path
    bags_converted: int
    bags_skipped: int  # --append: already in the dataset (same content hash)
    episodes: int  # added by this run
    steps: int
    episodes_total: int  # in the dataset now
    frames_read: int
    frames_used: int
    dropped_episodes: int
    successes: int
    clipped_fraction: float  # of the action values (not steps) clipped to [-1, 1]
    rate_hz: float
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.out}: {self.bags_converted} bag(s) converted"
            + (f", {self.bags_skipped} already in the dataset" if self.bags_skipped else "")
            + f"; {self.episodes} new episode(s), {self.steps} steps at {self.rate_hz:g} Hz "
            f"({self.successes} successful, {self.dropped_episodes} too short dropped); "
            f"{self.frames_used}/{self.frames_read} frames used; "
            f"{self.clipped_fraction:.2%} of action values clipped; "
            f"dataset holds {self.episodes_total} episodes; {self.seconds:.1f} s"
        )


# -- the one function the rest of lompo calls ---------------------------------------------------
def convert(
    bags: list[Path],
    out: Path,
    config: ConvertConfig | None = None,
    overwrite: bool = False,
    append: bool = False,
    progress: bool = False,
    workers: int | None = None,
) -> ConvertReport:
    """Convert bags (files, rosbag2 folders, or folders of them) into the dataset ``out``.

    ``workers``: processes that read and decode slices of each bag (None: one per core; 0: all
    in this process). One conversion at a time writes ``out``: another is refused by name.
    """
    from lompo_core.files import exclusive

    with exclusive(Path(out), "lompo convert"):
        return _convert(bags, out, config, overwrite, append, progress, workers)


def _convert(
    bags: list[Path],
    out: Path,
    config: ConvertConfig | None,
    overwrite: bool,
    append: bool,
    progress: bool,
    workers: int | None,
) -> ConvertReport:
    start = time.perf_counter()
    config = config or ConvertConfig()
    out = Path(out)
    if overwrite and append:
        raise LompoError("--overwrite and --append exclude each other")
    if workers is not None and workers < 0:
        raise LompoError(f"--workers must be 0 or more, got {workers}")
    existing: dict[str, Any] | None = None
    for bag in bags:  # replacing or writing into an input would destroy it
        if _inside(Path(bag), out):
            raise LompoError(
                f"--out {out} overlaps the input {bag}: write the dataset to a folder of its own"
            )
    if out.exists():
        if append:
            existing = EpisodeDataset(out).meta
        elif not overwrite:
            raise FileExistsError(
                f"{out} already exists; pass --overwrite to replace it or --append to add bags"
            )
        elif not _is_dataset(out):
            raise LompoError(
                f"--overwrite {out}: not a lompo dataset (no readable {META_FILE} with a "
                f"schema_version), so it is left alone; choose another --out or remove it yourself"
            )
    paths = [p for p in br.find_bags([Path(b) for b in bags]) if not _inside(p, out)]
    for path in paths:
        if _inside(out, path):
            raise LompoError(
                f"--out {out} overlaps the input {path}: write the dataset to a folder of its own"
            )
    labels = _load_labels(config.labels) if config.reward == "labels" else None
    if existing is not None:
        config = _compatible(config, existing, out)

    fingerprints = {p: br.bag_fingerprint(p) for p in paths}
    skipped = 0
    if existing is not None:
        known = {br.source_identity(s) for s in existing.get("sources", [])}
        legacy = any(kind == "sha256" for kind, _ in known)
        todo = [
            p
            for p in paths
            if ("fingerprint", fingerprints[p]) not in known
            and not (legacy and ("sha256", br.bag_sha256(p)) in known)
        ]
        skipped = len(paths) - len(todo)
        paths = todo

    out.parent.mkdir(parents=True, exist_ok=True)
    _collect_leftovers(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    writer: _EpisodeWriter | None = None
    try:
        writer = _EpisodeWriter(tmp, out, config, existing, labels)
        rate = config.rate_hz or (existing or {}).get("rate_hz")
        rate_source = "given" if config.rate_hz else ("dataset" if rate else "inferred")
        sources: list[SourceReport] = []
        from tqdm import tqdm

        workers = default_workers() if workers is None else workers
        if not paths:
            workers = 0  # --append with nothing new: nothing to fork for
        # Bytes: known for every bag before any is opened, so the total never grows.
        total = sum(br.bag_size(p) for p in paths)
        first = paths[0] if paths else None
        # The workers fork before the bar's monitor thread starts and before any bag is open.
        size = config.preprocessing.size
        with SliceReader(workers, first, config.distro, (size, size, 3)) as reader:
            bar = tqdm(total=total, unit="B", unit_scale=True, desc="convert", disable=not progress)
            try:
                for i, path in enumerate(paths):
                    # The first bag sets the rate (unless given); the others are checked
                    # against it.
                    src, rate = _convert_bag(
                        path,
                        config,
                        rate,
                        rate_source,
                        writer,
                        bar,
                        out,
                        fingerprints[path],
                        reader,
                        paths[i + 1] if i + 1 < len(paths) else None,
                    )
                    sources.append(src)
            finally:
                bar.close()
        if rate is None:  # --append with nothing new and no rate anywhere: keep the old value
            rate = (existing or {}).get("rate_hz", 0.0)
        meta = writer.meta(sources, float(rate), rate_source)
        writer.close()
        write_meta(tmp, meta)
        _swap(tmp, out)
    except BaseException:
        if writer is not None:
            writer.close()  # no episode file may appear while the folder is removed
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    values = sum(s.action_values for s in sources)
    return ConvertReport(
        out=out,
        bags_converted=len(sources),
        bags_skipped=skipped,
        episodes=sum(s.episodes for s in sources),
        steps=sum(s.steps for s in sources),
        episodes_total=len(meta["episodes"]),
        frames_read=sum(s.frames for s in sources),
        frames_used=sum(s.frames_used for s in sources),
        dropped_episodes=sum(s.dropped_episodes for s in sources),
        successes=writer.new_successes,
        clipped_fraction=sum(s.clipped_values for s in sources) / values if values else 0.0,
        rate_hz=float(rate),
        seconds=time.perf_counter() - start,
    )


# -- one bag ------------------------------------------------------------------------------------
def _median_rate(stamps: list[int]) -> float | None:
    periods = np.diff(np.array(stamps, np.int64))
    periods = periods[periods > 0]
    return 1e9 / float(np.median(periods)) if len(periods) else None


def _rate(stamps: list[int], path: Path, config: ConvertConfig) -> float:
    """The control rate from the median period of the commands' stamps."""
    rate = _median_rate(stamps)
    if rate is None:
        raise BagError(
            f"{path}: action topic {config.action_topic!r}: too few distinct stamps to infer the "
            "control rate; pass --rate HZ"
        )
    return rate


def _convert_bag(
    path: Path,
    config: ConvertConfig,
    rate: float | None,
    rate_source: str,
    writer: _EpisodeWriter,
    bar: Any,
    out: Path,
    fingerprint: str,
    reader: SliceReader,
    next_bag: Path | None = None,
) -> tuple[SourceReport, float]:
    """Convert one bag; returns its report and the control rate (inferred here if None)."""
    src = SourceReport(
        path=os.path.relpath(path.resolve(), out.resolve().parent),
        format=br.bag_format(path),
        size_bytes=br.bag_size(path),
        fingerprint=fingerprint,
    )
    bag = reader.summary(path)
    image_topic, action_topic = config.image_topic, config.action_topic
    kinds, specs = _bag_plan(bag, config, reader.workers)
    src.image_type = bag.topics[image_topic].msgtype
    src.action_type = bag.topics[action_topic].msgtype
    success_topic = next((t for t, kind in kinds.items() if kind == "success"), None)

    def next_slices() -> list[SliceSpec] | None:
        """The next bag's slices, for the workers to start on; its errors wait for its turn."""
        if next_bag is None:
            return None
        try:
            return _bag_plan(reader.summary(next_bag), config, reader.workers)[1]
        except LompoError:
            return None

    if next_bag is not None:
        reader.ask_summary(next_bag)
    pieces = reader.read(specs, then=next_slices)
    if config.stamps == "log":  # every event's stamp is its log time, for all that follows
        pieces = map(_log_stamped, pieces)

    # The rate comes from the first RATE_PROBE commands: hold the slices read until they came.
    head: list[Slice] = []
    stamps: list[int] = []
    frames: list[int] = []
    for piece in pieces:
        head.append(piece)
        stamps += [e[2] for e in piece.events if e[0] == action_topic][: RATE_PROBE - len(stamps)]
        frames += [e[2] for e in piece.events if e[0] == image_topic][: RATE_PROBE - len(frames)]
        if len(stamps) >= RATE_PROBE:
            break
    command_rate = _rate(stamps, path, config) if rate is None or len(stamps) > 1 else rate
    bag_rate = command_rate
    camera_rate = _median_rate(frames)
    if camera_rate is not None:
        # Commands faster than the camera: a step needs an image, so steps come at the camera's
        # rate, each with the latest command before its frame.
        bag_rate = min(bag_rate, camera_rate)
    rate = bag_rate if rate is None else rate
    src.action_rate_hz = round(command_rate, 6)
    if rate_source != "given" and abs(bag_rate - rate) > RATE_MISMATCH * rate:
        raise BagError(
            f"{path}: action topic {action_topic!r} runs at {bag_rate:.3g} Hz, the other "
            f"bags at {rate:.3g} Hz; convert them separately or pass --rate HZ"
        )

    index = 0

    def emit(ep: AlignedEpisode) -> None:
        nonlocal index
        writer.write(ep, path, index, src)
        index += 1

    dt, tol, gap = config.timing(rate)
    aligner = Aligner(
        dt,
        tol,
        gap,
        None,  # the action size is that of the first command
        _frame,
        emit,
        config.min_length,
        config.max_length,
        success_ends=success_topic is not None,
    )
    per_frame = src.size_bytes / max(bag.topics[image_topic].count, 1)
    order = br.StampOrder(path, int(config.max_latency_s * 1e9))
    shown = 0  # bytes of this bag on the progress bar
    for piece in itertools.chain(head, pieces):
        _stream(piece, kinds, order, aligner, src, config, path)
        step = int(per_frame * (0 if piece.frames is None else len(piece.frames)))
        bar.update(step)
        shown += step
    for item in order.pop_all():
        _dispatch(aligner, item, kinds)
    aligner.finish()
    bar.update(src.size_bytes - shown)

    st = aligner.stats
    # A chunk lost without a CRC (rosbag2's mcap default writes none) reads as a shorter bag:
    # what was read must be what the bag's own index counts.
    for topic, got in ((image_topic, st.images), (action_topic, st.commands)):
        listed = bag.topics[topic].count
        if got != listed:
            raise BagError(
                f"{path}: topic {topic!r}: {got} messages read, the bag's index lists {listed}; "
                "the bag is damaged"
            )
    src.frames, src.frames_used, src.commands = st.images, st.images_used, st.commands
    src.dropped_episodes, src.ends = st.dropped, dict(st.ends)
    if st.episodes == 0:
        raise BagError(_no_episode_reason(path, config, st))
    return src, rate


def _log_stamped(piece: Slice) -> Slice:
    """``--stamps log``: each event stamped with its log time instead of its header stamp."""
    piece.events = [(topic, t, t, value) for topic, t, _, value in piece.events]
    return piece


def _bag_plan(
    bag: br.BagSummary, config: ConvertConfig, workers: int
) -> tuple[dict[str, str], list[SliceSpec]]:
    """Check the bag has what the config asks for; the topics to read (topic -> kind) and its
    slices. BagError names the bag and topic at fault."""
    image_topic, action_topic = config.image_topic, config.action_topic
    bag.require(image_topic, br.IMAGE_TYPES, "image", "--image-topic")
    action_type = bag.require(action_topic, br.ACTION_TYPES, "action", "--action-topic")
    br.action_reader(action_type, config.action.fields)  # refuse bad fields up front
    kinds = {image_topic: "image", action_topic: "action"}
    if config.reward == "topic":
        bag.require(
            config.reward_topic,
            br.REWARD_TYPES,
            "reward",
            "--reward-topic, or choose --success-topic, --labels or --reward none",
        )
        kinds[config.reward_topic] = "reward"
    if config.reward == "success" or (
        config.reward != "labels" and config.success_topic in bag.topics
    ):
        assert config.success_topic is not None
        bag.require(config.success_topic, br.SUCCESS_TYPES, "success", "--success-topic")
        kinds[config.success_topic] = "success"
    fields = dict(
        bag=bag.path,
        distro=config.distro,
        topics=kinds,
        preprocessing=config.preprocessing,
        action_fields=config.action.fields,
    )
    return kinds, plan(bag, fields, image_topic, workers)


def _frame(item: np.ndarray | BadFrame, stamp: int) -> np.ndarray:
    """The aligner takes a frame: a frame that could not be decoded is an error only now."""
    if isinstance(item, BadFrame):
        raise BagError(item.error)
    return item


def _stream(
    piece: Slice,
    kinds: dict[str, str],
    order: br.StampOrder,
    aligner: Aligner,
    src: SourceReport,
    config: ConvertConfig,
    path: Path,
) -> None:
    """Feed one slice's messages (in the bag's order) to the aligner in header-stamp order."""
    if not src.image_size and piece.camera is not None:
        width, height, src.image_encoding = piece.camera
        src.image_size = [width, height]
    frames = piece.frames
    commands = [(topic, value) for topic, _, _, value in piece.events if kinds[topic] == "action"]
    actions = iter(_normalise(commands, src, config, path))
    for topic, t, stamp, value in piece.events:
        kind = kinds[topic]
        if kind == "image":
            image = value if isinstance(value, BadFrame) else frames[value]  # type: ignore[index]
            order.push(topic, stamp, t, 0, image)
        elif kind == "action":
            order.push(topic, stamp, t, 2, next(actions))
        else:
            order.push(topic, stamp, t, 1, value)
        for item in order.pop_ready(t):
            _dispatch(aligner, item, kinds)


def _normalise(
    commands: list[tuple[str, np.ndarray]], src: SourceReport, config: ConvertConfig, path: Path
) -> np.ndarray:
    """A slice's commands scaled by the action limits to [-1, 1] and clipped, [n, dim] float32
    (in one go: per command, numpy's call overhead cost the converting process ~20 ms a
    600-frame bag, taken from the workers on a 2-core machine)."""
    if not commands:
        return np.empty((0, src.action_dim), np.float32)
    topic = commands[0][0]
    src.action_dim = src.action_dim or commands[0][1].size
    try:
        limits = np.array(config.action.limits(src.action_dim), np.float64)
    except LompoError as exc:
        raise BagError(f"{path}: action topic {topic!r}: {exc}") from None
    for _, command in commands:
        if command.shape != limits.shape:
            raise BagError(
                f"{path}: action topic {topic!r}: a command with {command.size} values, expected "
                f"{limits.size} (the first command's size and the config's action max)"
            )
    action = np.stack([command for _, command in commands]) / limits
    if not np.isfinite(action).all():
        raise BagError(f"{path}: action topic {topic!r}: a command holds NaN or Inf")
    src.action_values += action.size
    src.clipped_values += int(np.count_nonzero(np.abs(action) > 1.0 + CLIP_EPS))
    return np.clip(action, -1.0, 1.0).astype(np.float32)


def _dispatch(aligner: Aligner, item: tuple[int, str, Any], kinds: dict[str, str]) -> None:
    stamp, topic, value = item
    kind = kinds[topic]
    if kind == "image":
        aligner.image(stamp, value)
    elif kind == "action":
        aligner.command(stamp, value)
    elif kind == "reward":
        aligner.reward(stamp, value)
    else:
        aligner.success(stamp, value)


def _no_episode_reason(path: Path, config: ConvertConfig, st: Any) -> str:
    def span(a: int | None, b: int | None) -> str:
        return f"{a / 1e9:.3f} .. {b / 1e9:.3f} s"

    if (
        st.first_command is None
        or st.last_image < st.first_command
        or st.last_command < st.first_image
    ):
        return (
            f"{path}: images on {config.image_topic!r} ({span(st.first_image, st.last_image)}) "
            f"and actions on {config.action_topic!r} "
            f"({span(st.first_command, st.last_command) if st.first_command else 'none'}) never "
            "overlap in time (stamped by different clocks?)"
        )
    return (
        f"{path}: no episode of at least {config.min_length} steps on {config.image_topic!r} and "
        f"{config.action_topic!r} ({st.dropped} shorter ones dropped; episode ends: {st.ends}); "
        "check --rate and the config's gap_s and tolerance_s"
    )


# -- writing --------------------------------------------------------------------------------------
class _EpisodeWriter:
    def __init__(
        self,
        tmp: Path,
        out: Path,
        config: ConvertConfig,
        existing: dict[str, Any] | None,
        labels: dict[str, bool] | None,
    ) -> None:
        self.tmp, self.out, self.config, self.labels = tmp, out, config, labels
        self.existing = existing
        self.episodes: list[dict[str, Any]] = []
        self.new_successes = 0
        self.names: tuple[str, ...] | None = None
        if existing is not None:
            for entry in existing["episodes"]:
                _link_or_copy(out / entry["file"], tmp / entry["file"])
                self.episodes.append(entry)
        self.next = 1 + max((_number(e["file"]) for e in self.episodes), default=-1)
        # One thread writes the episode files (zip, hashes and the disk all release the GIL), so
        # slices are consumed while an episode reaches the disk; meta() waits for the files.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episode-writer")
        self._pending: deque[tuple[dict[str, Any], Future[str]]] = deque()

    def write(self, ep: AlignedEpisode, bag: Path, index: int, src: SourceReport) -> None:
        if self.labels is not None:
            success = _label(self.labels, bag, index)
            ep = replace(ep, terminal=success)
            arrays = episode_arrays(ep, sparse_success_reward=True)
        else:
            arrays = episode_arrays(ep, sparse_success_reward=self.config.reward == "success")
            if self.config.reward == "none":
                arrays["reward"][:] = 0.0
        name = f"episode_{self.next:06d}.npz"
        self.next += 1
        self.new_successes += int(ep.terminal)
        src.episodes += 1
        src.steps += len(ep)
        record = {
            "file": name,
            "length": len(ep),
            "return": float(arrays["reward"].sum()),
            "success": bool(ep.terminal),
            "sha256": "",  # once written
            "source": src.path,
            "source_episode": index,
            "start_ns": int(ep.steps[0].stamp),
            "end": ep.end,
        }
        self.episodes.append(record)
        job = self._thread.submit(save_episode, self.tmp / name, arrays, self.config.compress)
        self._pending.append((record, job))
        while len(self._pending) > WRITES_AHEAD:  # bounds the episodes held in memory
            self._finish_one()

    def _finish_one(self) -> None:
        record, job = self._pending.popleft()
        record["sha256"] = job.result()

    def close(self) -> None:
        """Wait for the episode being written (none starts after) and stop the thread."""
        self._thread.shutdown(wait=True, cancel_futures=True)

    def meta(self, sources: list[SourceReport], rate: float, rate_source: str) -> dict[str, Any]:
        while self._pending:
            self._finish_one()
        c = self.config
        old = self.existing or {}
        dim = _action_dim(sources, old)
        names = old["action"]["names"] if old else _action_names(c, sources, dim)
        all_sources = list(old.get("sources", [])) + [s.__dict__ for s in sources]
        # --append: the new bags' commands must be of the kinds the dataset already holds.
        kinds = {s.get("action_type") for s in old.get("sources", [])} - {None, ""}
        new = {s.action_type for s in sources} - {""}
        if kinds and not new <= kinds:
            raise DatasetError(
                f"{self.out / META_FILE}: its bags' commands are {', '.join(sorted(kinds))}, these "
                f"are {', '.join(sorted(new - kinds))}: append bags recorded the same way"
            )
        values = sum(s["action_values"] for s in all_sources)
        clipped = sum(s["clipped_values"] for s in all_sources)
        hashes = [e["sha256"] for e in self.episodes]
        if not self.episodes:
            raise BagError("no episodes: nothing to write")
        from lompo_core import __version__

        dt, tol, gap = c.timing(rate)
        return {
            "schema_version": SCHEMA_VERSION,
            "created_by": f"lompo {__version__} convert",
            "action": {
                "names": list(names),
                "unit": c.action.unit,
                "max": list(c.action.limits(dim)),
                "normalised": "action = clip(command / max, -1, 1)",
            },
            "preprocessing": c.preprocessing.as_dict(),
            "rate_hz": rate,
            "rate_source": rate_source,
            "alignment": {
                "convention": "dreamer: action[t] led to image[t], action[0] = 0",
                "tolerance_s": tol / 1e9,
                "gap_s": gap / 1e9,
                "max_latency_s": c.max_latency_s,
                "stamps": c.stamps,
            },
            "topics": {
                "image": c.image_topic,
                "action": c.action_topic,
                "reward": c.reward_topic if c.reward == "topic" else None,
                "success": c.success_topic if c.reward != "labels" else None,
            },
            "reward_source": c.reward,
            "sources": all_sources,
            "counts": {
                "episodes": len(self.episodes),
                "steps": int(sum(e["length"] for e in self.episodes)),
                "successes": int(sum(e["success"] for e in self.episodes)),
                "frames_read": int(sum(s["frames"] for s in all_sources)),
                "dropped_episodes": int(sum(s["dropped_episodes"] for s in all_sources)),
                "clipped_fraction": clipped / values if values else 0.0,
            },
            "config": c.as_dict(),
            "episodes": self.episodes,
            "content_hash": content_hash(hashes),
        }


def _action_dim(sources: list[SourceReport], old: dict[str, Any]) -> int:
    return len(old["action"]["names"]) if old else sources[0].action_dim


def _action_names(config: ConvertConfig, sources: list[SourceReport], dim: int) -> tuple[str, ...]:
    fields = config.action.fields
    if not sources or sources[0].action_type in br.TWIST_TYPES:
        return tuple(fields or br.TWIST_DEFAULT)
    if fields:
        return tuple(f"data[{br.array_index(f)}]" for f in fields)
    return tuple(f"data[{i}]" for i in range(dim))


def _compatible(config: ConvertConfig, meta: dict[str, Any], out: Path) -> ConvertConfig:
    """--append: the new bags must be converted exactly as the dataset's were."""
    where = out / META_FILE
    pre = Preprocessing.from_dict(meta["preprocessing"])
    if pre != config.preprocessing:
        raise DatasetError(
            f"{where}: preprocessing {pre.as_dict()} differs from this run's "
            f"{config.preprocessing.as_dict()}; pass the dataset's config"
        )
    old_max = [float(v) for v in meta["action"]["max"]]
    new_max = list(config.action.limits(len(old_max)))
    if old_max != new_max:
        raise DatasetError(f"{where}: action max {old_max} differs from this run's {new_max}")
    rate = meta.get("rate_hz")
    if config.rate_hz is not None and rate and abs(config.rate_hz - rate) > 1e-9:
        raise DatasetError(f"{where}: rate {rate} Hz differs from --rate {config.rate_hz}")
    topics = {
        "image": config.image_topic,
        "action": config.action_topic,
        "reward": config.reward_topic if config.reward == "topic" else None,
        "success": config.success_topic if config.reward != "labels" else None,
    }
    for role, topic in topics.items():
        if (meta.get("topics") or {}).get(role) != topic:
            raise DatasetError(
                f"{where}: {role} topic {meta.get('topics', {}).get(role)!r} differs from this "
                f"run's {topic!r}; pass the dataset's config"
            )
    if meta.get("reward_source") != config.reward:
        raise DatasetError(
            f"{where}: reward source {meta.get('reward_source')!r} differs from this run's "
            f"{config.reward!r}"
        )
    if meta["action"].get("unit") != config.action.unit:
        raise DatasetError(
            f"{where}: action unit {meta['action'].get('unit')!r} differs from this run's "
            f"{config.action.unit!r}"
        )
    return config


def _label(labels: dict[str, bool], bag: Path, index: int) -> bool:
    stem = bag.stem if bag.is_file() else bag.name
    for key in (f"{bag.name}#{index}", f"{stem}#{index}", bag.name, stem):
        if key in labels:
            return labels[key]
    raise BagError(
        f"{bag}: episode {index} has no label (expected a key {stem!r} or '{stem}#{index}' "
        "in the labels file)"
    )


def _load_labels(path: Path | None) -> dict[str, bool]:
    import yaml

    assert path is not None
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise LompoError(f"{path}: labels file not found") from None
    except yaml.YAMLError as exc:
        raise LompoError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise LompoError(f"{path}: expected a mapping 'bag name[#episode]: success|failure'")
    words = {"success": True, "failure": False, True: True, False: False}  # 1/0 == True/False
    labels = {}
    for key, value in data.items():
        if value not in words:
            raise LompoError(
                f"{path}: label {key!r}: {value!r} is not success/failure (or true/false)"
            )
        labels[str(key)] = words[value]
    return labels


def _number(name: str) -> int:
    try:
        return int(Path(name).stem.rsplit("_", 1)[-1])
    except ValueError:
        return -1


def _collect_leftovers(out: Path) -> None:
    """Remove the hidden folders a killed conversion into ``out`` left (its pid is gone)."""
    for stale in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = stale.name[len(out.name) + 2 :].rpartition("-")
        if kind not in ("partial", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a dataset lompo wrote: all that --overwrite may replace."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "schema_version" in meta


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # episodes are never modified in place, so sharing the inode is safe
    except OSError:
        shutil.copy2(src, dst)


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished folder at ``out``; an old one is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
