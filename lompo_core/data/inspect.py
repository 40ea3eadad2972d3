"""``lompo inspect``: what is in a bag or a dataset, as text (and a contact sheet of frames).

For a bag: topics, types, counts, rates, duration and the longest gaps from arrival times (a
large bag is summarised at disk speed), and for stamped topics how far the header stamps run
from the log times (the first ``OFFSET_SAMPLES`` messages deserialised). For a dataset: episode
lengths, returns, success rate, per-axis action histograms, and a PNG grid of frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lompo_core.data import bagread as br
from lompo_core.data.dataset import EpisodeDataset

GAP_FACTOR = 5.0  # a pause longer than this many median periods is reported as a gap
HIST_BINS = 10
BAR_WIDTH = 30
OFFSET_SAMPLES = 100
# Types with a std_msgs/Header whose stamp lompo convert aligns on.
STAMPED_TYPES = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "geometry_msgs/msg/TwistStamped",
)


@dataclass
class TopicStats:
    name: str
    msgtype: str
    count: int
    rate_hz: float | None
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start s from bag start, s)
    stamp_offset_s: float | None = None  # median header stamp minus log time; None: unstamped


@dataclass
class BagSummary:
    path: Path
    format: str
    size_bytes: int
    duration_s: float
    start_ns: int
    topics: list[TopicStats]

    def text(self) -> str:
        lines = [
            f"bag       {self.path}",
            f"format    {self.format}, {self.size_bytes / 1e6:.1f} MB",
            f"duration  {self.duration_s:.3f} s from {self.start_ns / 1e9:.3f} s",
            f"{'topic':<40} {'type':<34} {'count':>7} {'rate Hz':>8} {'stamp-log':>10}  gaps",
        ]
        for t in self.topics:
            rate = f"{t.rate_hz:8.2f}" if t.rate_hz else "       -"
            offset = "-" if t.stamp_offset_s is None else f"{t.stamp_offset_s * 1e3:+.1f} ms"
            gaps = ", ".join(f"{d:.3f} s at +{s:.3f} s" for s, d in t.gaps[:3]) or "none"
            more = f" (+{len(t.gaps) - 3} more)" if len(t.gaps) > 3 else ""
            lines.append(
                f"{t.name:<40} {t.msgtype:<34} {t.count:>7} {rate} {offset:>10}  {gaps}{more}"
            )
        return "\n".join(lines)


def inspect_bag(path: Path, distro: str = "jazzy") -> BagSummary:
    path = Path(path)
    with br.Bag(path, distro) as bag:
        topics = bag.topics
        times: dict[str, list[int]] = {name: [] for name in topics}
        offsets: dict[str, list[int]] = {name: [] for name in topics}
        for topic, msgtype, t, raw in bag.raw_messages(list(topics)):
            times[topic].append(t)
            if msgtype in STAMPED_TYPES and len(offsets[topic]) < OFFSET_SAMPLES:
                stamp = br.header_stamp(bag.deserialize(raw, msgtype, topic), 0)
                if stamp:  # 0: the header's stamp is unset
                    offsets[topic].append(stamp - t)
        start = min((v[0] for v in times.values() if v), default=0)
        end = max((v[-1] for v in times.values() if v), default=0)
    stats = []
    for name, info in sorted(topics.items()):
        arr = np.array(times[name], np.int64)
        periods = np.diff(arr)
        rate, gaps = None, []
        positive = periods[periods > 0]
        if len(positive):
            median = float(np.median(positive))
            rate = 1e9 / median
            for i in np.flatnonzero(periods > GAP_FACTOR * median):
                gaps.append(((arr[i] - start) / 1e9, periods[i] / 1e9))
            gaps.sort(key=lambda g: -g[1])
        offset = float(np.median(offsets[name])) / 1e9 if offsets[name] else None
        stats.append(TopicStats(name, info.msgtype, len(arr), rate, gaps, offset))
    return BagSummary(
        path, br.bag_format(path), br.bag_size(path), (end - start) / 1e9, start, stats
    )


@dataclass
class DatasetSummary:
    path: Path
    episodes: int
    steps: int
    lengths: np.ndarray
    returns: np.ndarray
    successes: int
    action_names: list[str]
    histograms: list[np.ndarray]  # counts per bin over [-1, 1], one per action axis
    meta: dict
    sheet: Path | None = None

    def text(self) -> str:
        m = self.meta
        lines = [
            f"dataset   {self.path}  (schema {m.get('schema_version')}, hash "
            f"{str(m.get('content_hash', ''))[:12]})",
            f"episodes  {self.episodes}, {self.steps} steps at {m.get('rate_hz', '?')} Hz; length "
            f"min {self.lengths.min()} / mean {self.lengths.mean():.1f} / max {self.lengths.max()}",
            f"return    mean {self.returns.mean():.3f}, min {self.returns.min():.3f}, "
            f"max {self.returns.max():.3f}",
            f"success   {self.successes}/{self.episodes} ({self.successes / self.episodes:.0%})",
            f"images    {m.get('preprocessing')}",
            f"action    {m.get('action', {}).get('names')} "
            f"max {m.get('action', {}).get('max')} {m.get('action', {}).get('unit', '')}",
        ]
        edges = np.linspace(-1, 1, HIST_BINS + 1)
        for name, hist in zip(self.action_names, self.histograms, strict=True):
            lines.append(f"histogram of {name}")
            top = max(int(hist.max()), 1)
            for lo, hi, count in zip(edges[:-1], edges[1:], hist, strict=True):
                bar = "#" * int(round(BAR_WIDTH * count / top))
                lines.append(f"  [{lo:+.1f},{hi:+.1f}) {count:>8} {bar}")
        if self.sheet is not None:
            lines.append(f"frames    {self.sheet}")
        return "\n".join(lines)


def inspect_dataset(path: Path, sheet: Path | None = None, rows: int = 8, cols: int = 8):
    """Summarise a dataset and write a contact sheet (``rows`` episodes x ``cols`` frames)."""
    ds = EpisodeDataset(path)
    hists = [np.zeros(HIST_BINS, np.int64) for _ in range(ds.action_dim)]
    picks = set(np.linspace(0, len(ds) - 1, min(rows, len(ds))).round().astype(int).tolist())
    tiles: list[np.ndarray] = []
    for i in range(len(ds)):
        ep = ds.load(i)
        for d in range(ds.action_dim):
            # action[0] is the zero placeholder of the Dreamer convention, not a command.
            hists[d] += np.histogram(ep["action"][1:, d], bins=HIST_BINS, range=(-1, 1))[0]
        if i in picks:
            idx = np.linspace(0, len(ep["image"]) - 1, cols).round().astype(int)
            tiles.append(np.concatenate([_border(ep["image"][j]) for j in idx], axis=1))
    summary = DatasetSummary(
        path=Path(path),
        episodes=len(ds),
        steps=ds.total_steps,
        lengths=ds.lengths,
        returns=np.array([e.ret for e in ds.episodes]),
        successes=sum(e.success for e in ds.episodes),
        action_names=list(ds.meta["action"]["names"]),
        histograms=hists,
        meta=ds.meta,
    )
    sheet = Path(sheet) if sheet else Path(path).parent / f"{Path(path).name}_frames.png"
    write_png(sheet, np.concatenate(tiles, axis=0))
    summary.sheet = sheet
    return summary


def _border(img: np.ndarray) -> np.ndarray:
    return np.pad(img, ((1, 1), (1, 1), (0, 0)), constant_values=255)


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    from lompo_core.files import atomic_write_bytes

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), buf.tobytes())
