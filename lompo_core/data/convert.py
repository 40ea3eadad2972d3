"""``lompo convert``: robot bags -> the episode dataset of DESIGN.md, one way, streaming, atomic.

Each bag flows one way through ``_convert_bag``: found (``bagread.find_bags``), read in log-time
order with rosbags, every frame decoded and resized as it comes (``preprocess``), messages put back
in header-stamp order within a short look-back (``bagread.StampOrder``), aligned to the control
ticks (``align.Aligner``), and each episode written as soon as it ends, so memory does not grow
with the bag. Bags convert one after another in this process; the first sets the control rate
the others are checked against. The dataset is built in a hidden folder beside ``out`` and
renamed into place at the end (``files.atomic_folder``): a failure leaves no partial dataset
behind.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
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
    write_episode,
    write_meta,
)
from lompo_core.errors import BagError, DatasetError, ImageError, LompoError
from lompo_core.files import atomic_folder, exclusive
from lompo_core.image import Preprocessing, decode_image, jpeg_size, preprocess

CLIP_EPS = 1e-6  # a command at exactly the limit is not "clipped" after float rounding
RATE_PROBE = 30  # action messages read to infer the control rate (median period)
RATE_MISMATCH = 0.1  # relative rate difference between bags that is refused
PRIORITY = {"image": 0, "reward": 1, "success": 1, "action": 2}  # order of equal stamps


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


@dataclass(frozen=True)
class BadFrame:
    """A frame that could not be decoded; the error is raised only if the alignment uses it."""

    error: str


@dataclass
class BagResult:
    """What converting one bag gives: its report, its step rate and its episodes' records."""

    source: SourceReport
    rate: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)


# -- the one function the rest of lompo calls ---------------------------------------------------
def convert(
    bags: list[Path],
    out: Path,
    config: ConvertConfig | None = None,
    overwrite: bool = False,
    append: bool = False,
    progress: bool = False,
) -> ConvertReport:
    """Convert bags (files, rosbag2 folders, or folders of them) into the dataset ``out``.

    One conversion at a time writes ``out``: another is refused by name.
    """
    with exclusive(Path(out), "lompo convert"):
        return _convert(bags, Path(out), config or ConvertConfig(), overwrite, append, progress)


def _convert(
    bags: list[Path],
    out: Path,
    config: ConvertConfig,
    overwrite: bool,
    append: bool,
    progress: bool,
) -> ConvertReport:
    import time

    from tqdm import tqdm

    start = time.perf_counter()
    if overwrite and append:
        raise LompoError("--overwrite and --append exclude each other")
    existing = _check_out(bags, out, overwrite, append)
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
    if existing is not None:  # --append: bags already in the dataset are skipped
        known = {_fingerprint(s, out) for s in existing.get("sources", [])}
        todo = [p for p in paths if fingerprints[p] not in known]
        skipped, paths = len(paths) - len(todo), todo

    old_episodes = list((existing or {}).get("episodes", []))
    rate = config.rate_hz or (existing or {}).get("rate_hz")
    rate_source = "given" if config.rate_hz else ("dataset" if rate else "inferred")
    with atomic_folder(out) as tmp:
        for entry in old_episodes:
            _link_or_copy(out / entry["file"], tmp / entry["file"])
        parent = out.resolve().parent
        sizes = [br.bag_size(p) for p in paths]
        results: list[BagResult] = []
        number = 1 + max((_file_number(e["file"]) for e in old_episodes), default=-1)
        with tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="convert",
                  disable=not progress) as bar:  # fmt: skip
            for path, size in zip(paths, sizes, strict=True):
                shown = bar.n
                src = SourceReport(path=os.path.relpath(path.resolve(), parent),
                                   format=br.bag_format(path), size_bytes=size,
                                   fingerprint=fingerprints[path])  # fmt: skip
                result = _convert_bag(path, src, tmp, number, config, rate, rate_source, labels,
                                      bar.update)  # fmt: skip
                results.append(result)
                rate, number = result.rate, number + len(result.records)  # the first bag's rate
                bar.update(size - (bar.n - shown))  # the bytes that are not frames
        records = old_episodes + [r for result in results for r in result.records]
        if rate is None:  # --append with nothing new and no rate anywhere: keep the old value
            rate = (existing or {}).get("rate_hz", 0.0)
        sources = [r.source for r in results]
        meta = _meta(config, existing, out, sources, records, float(rate), rate_source)
        write_meta(tmp, meta)

    values = sum(s.action_values for s in sources)
    return ConvertReport(
        out=out,
        bags_converted=len(sources),
        bags_skipped=skipped,
        episodes=sum(s.episodes for s in sources),
        steps=sum(s.steps for s in sources),
        episodes_total=len(records),
        frames_read=sum(s.frames for s in sources),
        frames_used=sum(s.frames_used for s in sources),
        dropped_episodes=sum(s.dropped_episodes for s in sources),
        successes=sum(rec["success"] for r in results for rec in r.records),
        clipped_fraction=sum(s.clipped_values for s in sources) / values if values else 0.0,
        rate_hz=float(rate),
        seconds=time.perf_counter() - start,
    )


def _check_out(bags: list[Path], out: Path, overwrite: bool, append: bool) -> dict | None:
    """The existing dataset's meta for --append (None otherwise); refuses what would destroy."""
    for bag in bags:  # replacing or writing into an input would destroy it
        if _inside(Path(bag), out):
            raise LompoError(
                f"--out {out} overlaps the input {bag}: write the dataset to a folder of its own"
            )
    if not out.exists():
        return None
    if append:
        return EpisodeDataset(out).meta
    if not overwrite:
        raise FileExistsError(
            f"{out} already exists; pass --overwrite to replace it or --append to add bags"
        )
    if not _is_dataset(out):
        raise LompoError(
            f"--overwrite {out}: not a lompo dataset (no readable {META_FILE} with a "
            f"schema_version), so it is left alone; choose another --out or remove it yourself"
        )
    return None


# -- one bag: read, align, write ----------------------------------------------------------------
def _convert_bag(
    path: Path,
    src: SourceReport,
    tmp: Path,
    first: int,
    config: ConvertConfig,
    rate: float | None,
    rate_source: str,
    labels: dict[str, bool] | None,
    shown: Callable[[int], Any],
) -> BagResult:
    """Convert one bag into episode files in ``tmp``, numbered from ``first``; ``rate``: the
    step rate the other bags set (None: this bag sets it); ``shown(bytes)`` follows the
    reading."""
    result = BagResult(src)
    with br.Bag(path, config.distro) as bag:
        summary = bag.summary()
        kinds = _topics(summary, config)
        src.image_type = summary.topics[config.image_topic].msgtype
        src.action_type = summary.topics[config.action_topic].msgtype
        events = _events(bag, kinds, config, src)
        # The rate comes from the first RATE_PROBE commands: hold the events read until then.
        head = list(_until_probed(events))
        command_rate, bag_rate = _rates(head, path, config, rate)
        rate = bag_rate if rate is None else rate
        result.rate = rate
        src.action_rate_hz = round(command_rate, 6)
        if rate_source != "given" and abs(bag_rate - rate) > RATE_MISMATCH * rate:
            raise BagError(
                f"{path}: action topic {config.action_topic!r} runs at {bag_rate:.3g} Hz, the "
                f"other bags at {rate:.3g} Hz; convert them separately or pass --rate HZ"
            )

        def emit(ep: AlignedEpisode) -> None:
            index = len(result.records)
            name = f"episode_{first + index:06d}.npz"
            arrays = _arrays(ep, config, labels, path, index)
            record = write_episode(tmp, name, arrays, config.compress, source=src.path,
                                   source_episode=index, start_ns=int(ep.steps[0].stamp),
                                   end=ep.end)  # fmt: skip
            result.records.append(record)
            src.episodes += 1
            src.steps += len(ep)

        dt, tol, gap = config.timing(rate)
        success_ends = "success" in kinds.values()
        aligner = Aligner(dt, tol, gap, None, _frame, emit, config.min_length,
                          config.max_length, success_ends=success_ends)  # fmt: skip
        order = br.StampOrder(path, int(config.max_latency_s * 1e9))
        per_frame = src.size_bytes // max(summary.topics[config.image_topic].count, 1)
        for topic, kind, t, stamp, value in itertools.chain(head, events):
            order.push(topic, stamp, t, PRIORITY[kind], value)
            for item in order.pop_ready(t):
                _dispatch(aligner, item, kinds)
            if kind == "image":
                shown(per_frame)
        for item in order.pop_all():
            _dispatch(aligner, item, kinds)
        aligner.finish()

    st = aligner.stats
    # A chunk lost without a CRC (rosbag2's mcap default writes none) reads as a shorter bag:
    # what was read must be what the bag's own index counts.
    for topic, got in ((config.image_topic, st.images), (config.action_topic, st.commands)):
        listed = summary.topics[topic].count
        if got != listed:
            raise BagError(
                f"{path}: topic {topic!r}: {got} messages read, the bag's index lists {listed}; "
                "the bag is damaged"
            )
    src.frames, src.frames_used, src.commands = st.images, st.images_used, st.commands
    src.dropped_episodes, src.ends = st.dropped, dict(st.ends)
    if st.episodes == 0:
        raise BagError(_no_episode_reason(path, config, st))
    return result


def _topics(bag: br.BagSummary, config: ConvertConfig) -> dict[str, str]:
    """The topics to read (topic -> "image" | "action" | "reward" | "success"), checked against
    the bag: BagError names the bag and topic at fault."""
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
    return kinds


def _events(
    bag: br.Bag, kinds: dict[str, str], config: ConvertConfig, src: SourceReport
) -> Iterator[tuple[str, str, int, int, Any]]:
    """(topic, kind, log time, stamp, value) in the bag's order: an image's value is its frame
    at model size (or a BadFrame), a command's its normalised action, a reward a float, a
    success flag a bool."""
    p = config.preprocessing
    read_action: Callable[[Any], np.ndarray] | None = None
    limits: np.ndarray | None = None
    for topic, msgtype, t, msg in bag.messages(list(kinds)):
        stamp = t if config.stamps == "log" else br.header_stamp(msg, t)
        kind = kinds[topic]
        value: Any
        if kind == "image":
            try:
                rgb = decode_image(msg, p)
                value = preprocess(rgb, p)
            except ImageError as exc:
                value = BadFrame(f"{bag.path}: topic {topic!r}: image at {stamp} ns: {exc}")
            else:
                if not src.image_size:  # the camera's size, not that of a reduced jpeg decode
                    size = jpeg_size(msg.data) if hasattr(msg, "format") else None
                    src.image_size = list(size or (int(rgb.shape[1]), int(rgb.shape[0])))
                    src.image_encoding = str(getattr(msg, "encoding", getattr(msg, "format", "")))
        elif kind == "action":
            if read_action is None:
                read_action = br.action_reader(msgtype, config.action.fields)[0]
            try:
                command = read_action(msg)
            except IndexError:
                raise BagError(
                    f"{bag.path}: action topic {topic!r}: a command has {len(msg.data)} values, "
                    f"fewer than the fields {list(config.action.fields or ())} need"
                ) from None
            if limits is None:
                src.action_dim = command.size
                try:
                    limits = np.array(config.action.limits(command.size), np.float64)
                except LompoError as exc:
                    raise BagError(f"{bag.path}: action topic {topic!r}: {exc}") from None
            value = _normalise(command, limits, src, bag.path, topic)
        elif kind == "reward":
            value = float(msg.data)
        else:
            value = bool(msg.data)
        yield topic, kind, t, stamp, value


def _normalise(
    command: np.ndarray, limits: np.ndarray, src: SourceReport, path: Path, topic: str
) -> np.ndarray:
    """A command scaled by the action limits to [-1, 1] and clipped, float32; clips counted."""
    if command.shape != limits.shape:
        raise BagError(
            f"{path}: action topic {topic!r}: a command with {command.size} values, expected "
            f"{limits.size} (the first command's size and the config's action max)"
        )
    action = command / limits
    if not np.isfinite(action).all():
        raise BagError(f"{path}: action topic {topic!r}: a command holds NaN or Inf")
    src.action_values += action.size
    src.clipped_values += int(np.count_nonzero(np.abs(action) > 1.0 + CLIP_EPS))
    return np.clip(action, -1.0, 1.0).astype(np.float32)


def _until_probed(
    events: Iterator[tuple[str, str, int, int, Any]],
) -> Iterator[tuple[str, str, int, int, Any]]:
    """The first events, up to the RATE_PROBE-th command (or all, in a shorter bag)."""
    commands = 0
    for event in events:
        yield event
        commands += event[1] == "action"
        if commands >= RATE_PROBE:
            return


def _rates(
    head: list[tuple[str, str, int, int, Any]],
    path: Path,
    config: ConvertConfig,
    rate: float | None,
) -> tuple[float, float]:
    """(the commands' rate, the bag's step rate) from the median periods of the first events.

    Commands faster than the camera: a step needs an image, so steps come at the camera's rate,
    each with the latest command before its frame.
    """
    commands = [e[3] for e in head if e[1] == "action"]
    frames = [e[3] for e in head if e[1] == "image"][:RATE_PROBE]
    if rate is not None and len(commands) <= 1:
        return rate, rate
    command_rate = _median_rate(commands)
    if command_rate is None:
        raise BagError(
            f"{path}: action topic {config.action_topic!r}: too few distinct stamps to infer the "
            "control rate; pass --rate HZ"
        )
    camera_rate = _median_rate(frames)
    return command_rate, min(command_rate, camera_rate or command_rate)


def _median_rate(stamps: list[int]) -> float | None:
    periods = np.diff(np.array(stamps, np.int64))
    periods = periods[periods > 0]
    return 1e9 / float(np.median(periods)) if len(periods) else None


def _frame(item: np.ndarray | BadFrame, stamp: int) -> np.ndarray:
    """The aligner takes a frame: a frame that could not be decoded is an error only now."""
    if isinstance(item, BadFrame):
        raise BagError(item.error)
    return item


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


def _arrays(
    ep: AlignedEpisode,
    config: ConvertConfig,
    labels: dict[str, bool] | None,
    bag: Path,
    index: int,
) -> dict[str, np.ndarray]:
    """The episode's arrays, with the reward the config asks for."""
    if labels is not None:
        ep = replace(ep, terminal=_label(labels, bag, index))
        return episode_arrays(ep, sparse_success_reward=True)
    arrays = episode_arrays(ep, sparse_success_reward=config.reward == "success")
    if config.reward == "none":
        arrays["reward"][:] = 0.0
    return arrays


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


# -- the dataset's records ------------------------------------------------------------------------
def _meta(
    c: ConvertConfig,
    existing: dict[str, Any] | None,
    out: Path,
    sources: list[SourceReport],
    episodes: list[dict[str, Any]],
    rate: float,
    rate_source: str,
) -> dict[str, Any]:
    old = existing or {}
    dim = len(old["action"]["names"]) if old else sources[0].action_dim
    names = old["action"]["names"] if old else _action_names(c, sources, dim)
    all_sources = list(old.get("sources", [])) + [s.__dict__ for s in sources]
    # --append: the new bags' commands must be of the kinds the dataset already holds.
    kinds = {s.get("action_type") for s in old.get("sources", [])} - {None, ""}
    new = {s.action_type for s in sources} - {""}
    if kinds and not new <= kinds:
        raise DatasetError(
            f"{out / META_FILE}: its bags' commands are {', '.join(sorted(kinds))}, these "
            f"are {', '.join(sorted(new - kinds))}: append bags recorded the same way"
        )
    values = sum(s["action_values"] for s in all_sources)
    clipped = sum(s["clipped_values"] for s in all_sources)
    if not episodes:
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
        "topics": _roles(c),
        "reward_source": c.reward,
        "sources": all_sources,
        "counts": {
            "episodes": len(episodes),
            "steps": int(sum(e["length"] for e in episodes)),
            "successes": int(sum(e["success"] for e in episodes)),
            "frames_read": int(sum(s["frames"] for s in all_sources)),
            "dropped_episodes": int(sum(s["dropped_episodes"] for s in all_sources)),
            "clipped_fraction": clipped / values if values else 0.0,
        },
        "config": c.as_dict(),
        "episodes": episodes,
        "content_hash": content_hash([e["sha256"] for e in episodes]),
    }


def _roles(c: ConvertConfig) -> dict[str, str | None]:
    return {
        "image": c.image_topic,
        "action": c.action_topic,
        "reward": c.reward_topic if c.reward == "topic" else None,
        "success": c.success_topic if c.reward != "labels" else None,
    }


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
    for role, topic in _roles(config).items():
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
    from lompo_core.files import read_yaml

    assert path is not None
    data = read_yaml(Path(path), "labels file")
    words = {"success": True, "failure": False, True: True, False: False}  # 1/0 == True/False
    labels = {}
    for key, value in data.items():
        if value not in words:
            raise LompoError(
                f"{path}: label {key!r}: {value!r} is not success/failure (or true/false)"
            )
        labels[str(key)] = words[value]
    return labels


def _fingerprint(source: dict[str, Any], out: Path) -> str:
    """A meta.json source's fingerprint; a source without one is from lompo 0.1.0."""
    if "fingerprint" not in source:
        raise DatasetError(
            f"{out / META_FILE}: its sources have no fingerprint (written by lompo 0.1.0): "
            "convert the bags into a new dataset instead of --append"
        )
    return str(source["fingerprint"])


def _file_number(name: str) -> int:
    try:
        return int(Path(name).stem.rsplit("_", 1)[-1])
    except ValueError:
        return -1


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
