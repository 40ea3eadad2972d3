"""Converter speed: frames/s for 640x480 rgb8 and jpeg bags against rosbags' own read+deserialise.

The floor is rosbags' own cost: iterate the bag and deserialise every message, nothing else, in one
process. ``lompo convert`` reads the same messages (uncompressed mcap chunks without rosbags'
copies, Images through its own CDR parser) in worker processes, one per core, and adds the bag
fingerprint, stamp ordering, alignment, decoding, the area resize to 64x64 and writing the
episodes into a new folder; "1 process" is the same with ``workers=0``. After one untimed run, the
three are timed in turn N times: frames/s are the best of N; "ratio" is the best floor over the
best conversion, "paired" the median over the N repeats of floor over conversion, each pair run
back to back (steadier on a machine whose speed drifts).
With ``--bags N`` each length is recorded as N bags of equal length in one folder (a session
recorded episode by episode), converted together; the floor opens and reads them one after the
other with AnyReader, which parses each bag's stored definitions at every open (the converter does
not need them: docs/convert.md, "Opening a bag"), so with many short bags the ratio says more about
opening than reading.
Target (issue 3): >= 70% of the floor for raw images. Figures: docs/convert.md.

    python benchmarks/convert_speed.py [--frames 600 3600] [--storage mcap] [--chunks none]
        [--repeats 5] [--bags 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from lompo_core import messages as m
from lompo_core.data.convert import convert
from lompo_core.data.convert_config import ConvertConfig
from lompo_core.data.slices import default_workers, keep_freed_memory

RATE_HZ = 30.0


def write_bag(path: Path, frames: int, encoding: str, storage: str, zstd: bool = False) -> int:
    """A 640x480 camera and a command per frame, 30 Hz; returns the bag's size in bytes. With
    ``zstd``, mcap chunks are zstd-compressed (what McapWriterOptions does by default)."""
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
            t = 1_000_000_000_000 + k * dt
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


def floor(path: Path) -> float:
    """Seconds for rosbags to read and deserialise every message of the bag (or of the bags in
    the folder ``path``, one after the other)."""
    bags = [path] if (path / "metadata.yaml").exists() else sorted(path.iterdir())
    start = time.perf_counter()
    for bag in bags:
        with AnyReader([bag]) as reader:
            for conn, _, raw in reader.messages():
                reader.deserialize(raw, conn.msgtype)
    return time.perf_counter() - start


def ours(path: Path, out: Path, workers: int | None) -> float:
    """Seconds for ``lompo convert`` into a new folder (the last run's is removed untimed)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    convert([path], out, ConvertConfig(reward="none"), workers=workers)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[600, 3600], help="bag lengths")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument(
        "--chunks", choices=("none", "zstd"), default="none", help="mcap chunk compression"
    )
    ap.add_argument("--repeats", type=int, default=3, help="best of N (the machine is shared)")
    ap.add_argument("--workers", type=int, help="convert's worker processes (default: per core)")
    ap.add_argument("--bags", type=int, default=1, help="record each length as N bags")
    args = ap.parse_args()
    if args.bags < 1:
        ap.error(f"--bags must be 1 or more, got {args.bags}")
    if any(f % args.bags for f in args.frames):
        ap.error(f"--bags {args.bags} must divide every --frames length {args.frames}")
    cv2.setNumThreads(1)  # the workers are the parallelism; OpenCV's own threads would compete
    # What `lompo convert` does for its own process. It makes the floor the faster one too: in a
    # process that has not yet freed a large block, glibc hands memory back to the kernel after
    # every frame, and rosbags read a sqlite3 bag 3-4x slower (docs/convert.md, "Speed").
    keep_freed_memory()
    workers = default_workers() if args.workers is None else args.workers
    root = Path(tempfile.mkdtemp(prefix="convert_speed_"))
    try:
        chunks = ""
        if args.storage == "mcap":
            chunks = " (zstd chunks)" if args.chunks == "zstd" else " (uncompressed chunks)"
        bags = f", {args.bags} bags each" if args.bags > 1 else ""
        print(
            f"640x480, {args.storage}{chunks}{bags}, best of {args.repeats}; "
            f"convert with {workers} workers"
        )
        print(
            f"{'bag':<6} {'frames':>6} {'MB':>7} {'floor fr/s':>11} {'convert fr/s':>13} "
            f"{'ratio':>6} {'paired':>7} {'1 process fr/s':>15}"
        )
        for frames in args.frames:
            for encoding in ("rgb8", "jpeg"):
                bag = root / f"{encoding}_{frames}"
                zstd = args.chunks == "zstd"
                if args.bags == 1:
                    size = write_bag(bag, frames, encoding, args.storage, zstd)
                else:
                    bag.mkdir()
                    size = sum(
                        write_bag(
                            bag / f"{i:04d}", frames // args.bags, encoding, args.storage, zstd
                        )
                        for i in range(args.bags)
                    )
                out = root / f"ds_{encoding}"
                # Untimed first: imports, the page cache, the allocator.
                floor(bag)
                ours(bag, out, workers)
                # Interleaved, so that a slow spell of the machine hits all three alike.
                runs = [
                    (floor(bag), ours(bag, out, workers), ours(bag, out, 0))
                    for _ in range(args.repeats)
                ]
                floor_s, conv_s, one_s = (min(r[i] for r in runs) for i in range(3))
                # Each repeat's floor and conversion ran back to back: the median of their ratios
                # is steadier than the ratio of two minima taken at different moments.
                paired = statistics.median(f / c for f, c, _ in runs)
                print(
                    f"{encoding:<6} {frames:>6} {size / 1e6:7.1f} {frames / floor_s:11.0f} "
                    f"{frames / conv_s:13.0f} {floor_s / conv_s:6.0%} {paired:7.0%} "
                    f"{frames / one_s:15.0f}",
                    flush=True,
                )
                shutil.rmtree(bag)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
