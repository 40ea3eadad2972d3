"""Converter speed and memory: a long 640x480 camera bag, as ``lompo convert`` runs it.

Writes one rosbag2 bag per length (30 Hz 640x480 rgb8 or jpeg frames and a TwistStamped command
per frame, ``--storage`` mcap or sqlite3, mcap chunks uncompressed as ``ros2 bag record`` writes
them, or ``--chunks zstd``), converts it with ``python -m lompo_core.cli convert`` in a fresh
process and prints its wall time, frames/s, the hour of logs that rate implies, and the peak
resident memory of the conversion. A single bag is converted in
one process; ``--bags N`` records each length as N bags (one per episode, a session recorded
bag by bag), converted one after another. For scale, "floor" is rosbags
alone reading and deserialising every message of the bag in one process.
Targets (issue 17): one hour of 30 Hz 640x480 rgb8 mcap in <= 2 min on two cores, peak memory
<= 300 MB and flat in the bag's length. Figures: docs/benchmarks.md.

    python benchmarks/convert_speed.py [--minutes 1 5] [--encoding rgb8] [--storage mcap]
        [--chunks none] [--bags 1]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from lompo_core import messages as m

RATE_HZ = 30.0


def write_bag(path: Path, frames: int, encoding: str, storage: str, zstd: bool, start: int) -> int:
    """``frames`` camera frames and commands at 30 Hz from ``start`` ns; the bag's bytes."""
    ts = m.typestore("jazzy")
    rng = np.random.default_rng(0)
    # Smooth random scenes: jpeg then compresses like a camera image, not like noise.
    base = cv2.resize(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (640, 480))
    dt = int(1e9 / RATE_HZ)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(path, version=9, storage_plugin=plugin)
    if zstd:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer as w:
        ctype = m.COMPRESSED_IMAGE_TYPE if encoding == "jpeg" else m.IMAGE_TYPE
        ci = w.add_connection(m.IMAGE_TOPIC, ctype, typestore=ts)
        cc = w.add_connection(m.COMMAND_TOPIC, m.TWIST_STAMPED_TYPE, typestore=ts)
        for k in range(frames):
            t = start + k * dt
            frame = np.roll(base, k * 3, axis=1)
            if encoding == "jpeg":
                _, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                msg = ts.types[ctype](
                    header=m.kit().header(t, "cam"), format="jpeg", data=buf.ravel()
                )
            else:
                msg = m.kit().image(frame, t)
            w.write(ci, t, ts.serialize_cdr(msg, ctype))
            cmd = m.kit().twist_stamped(np.sin([k / 10, k / 13, k / 17]) * 0.5, t + dt // 4)
            w.write(cc, t + dt // 4, ts.serialize_cdr(cmd, m.TWIST_STAMPED_TYPE))
    return sum(p.stat().st_size for p in path.iterdir())


def floor(bags: list[Path]) -> float:
    """Seconds for rosbags to read and deserialise every message of the bags, one process."""
    start = time.perf_counter()
    for bag in bags:
        with AnyReader([bag]) as reader:
            for conn, _, raw in reader.messages():
                reader.deserialize(raw, conn.msgtype)
    return time.perf_counter() - start


def convert(bags: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak MB) of ``lompo convert`` in a fresh process."""
    cmd = [sys.executable, "-m", "lompo_core.cli", "convert", str(bags), "--out", str(out),
           "--reward", "none", "--quiet"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:
        print("  (peak memory not above an earlier run's: shown as that run's)", flush=True)
    return seconds, peak_kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0], help="bag lengths")
    ap.add_argument("--encoding", choices=("rgb8", "jpeg"), default="rgb8")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--chunks", choices=("none", "zstd"), default="none", help="mcap chunks")
    ap.add_argument("--bags", type=int, default=1, help="record each length as N bags")
    args = ap.parse_args()
    if args.bags < 1:
        ap.error(f"--bags must be 1 or more, got {args.bags}")
    root = Path(tempfile.mkdtemp(prefix="convert_speed_"))
    print(f"640x480 {args.encoding}, {args.storage}, chunks {args.chunks}, {args.bags} bag(s)")
    print(f"{'minutes':>7} {'frames':>7} {'GB':>6} {'floor s':>8} {'convert s':>10} "
          f"{'frames/s':>9} {'1 h takes':>10} {'peak MB':>8}")  # fmt: skip
    try:
        # Lengths longest first: the peak memory is the largest over the runs so far.
        for minutes in sorted(args.minutes, reverse=True):
            frames = int(minutes * 60 * RATE_HZ)
            folder = root / "bags"
            bags = [folder / f"bag{i:03d}" for i in range(args.bags)]
            size, per_bag = 0, frames // args.bags
            for i, bag in enumerate(bags):
                start = 10**12 + i * (per_bag + 30) * int(1e9 / RATE_HZ)  # 1 s apart
                size += write_bag(bag, per_bag, args.encoding, args.storage,
                                  args.chunks == "zstd", start)  # fmt: skip
            floor_s = floor(bags)
            seconds, peak_mb = convert(folder, root / "ds")
            rate = frames / seconds
            print(f"{minutes:7g} {frames:7d} {size / 1e9:6.2f} {floor_s:8.1f} {seconds:10.1f} "
                  f"{rate:9.0f} {108_000 / rate / 60:8.1f} m {peak_mb:8.0f}", flush=True)  # fmt: skip
            shutil.rmtree(folder)
            shutil.rmtree(root / "ds")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
