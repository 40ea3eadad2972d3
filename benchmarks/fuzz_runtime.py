"""Hostile inputs through PolicyRuntime + Controller, in process, as policy_node runs them.

Every call is one ``PolicyRuntime.step`` on a rosbags ``sensor_msgs`` message (or an array) and
one ``Controller.on_result`` on its result, with the shipped policy (``models/drawer_close``) by
default. The inputs: decompression and allocation bombs (huge step, height or width; PNG and JPEG
headers claiming 30000x30000 and 40000x40000), truncated and bit-flipped JPEGs and PNGs, other
formats (BMP, TIFF, WebP, GIF, PPM, PGM, ...) labelled png or jpeg, wrong encodings and labels,
over-sized and NaN arrays, black, white and noise frames, and valid frames; then hostile sidecars
(NaN or huge values, swapped names, a changed crop or rate, an edited onnx with its sha256
rewritten), each a separate load.

    python benchmarks/fuzz_runtime.py                    # 20,000 calls
    python benchmarks/fuzz_runtime.py --count 2000 --json

Printed: exceptions escaping, non-zero commands on refused input, commands outside the physical
limit, worst-case time per call (target <= 50 ms) and where it happened, RSS before and after.
Black, white and noise frames decode (they are images); whether the arm moves on them is the
out-of-distribution gate's question, so they are counted apart.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lompo_core.messages import typestore  # noqa: E402

TS = typestore("jazzy")
Image = TS.types["sensor_msgs/msg/Image"]
Compressed = TS.types["sensor_msgs/msg/CompressedImage"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]
OTHER_FORMATS = (".bmp", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".sr", ".exr", ".hdr", ".pfm")
ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "32FC1", "", "RGB8")


def rss_mb() -> float:
    """The process's resident set now, in MB (from /proc; ru_maxrss is only the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def header() -> object:
    return Header(stamp=Time(sec=1, nanosec=0), frame_id="overhead_camera")


def raw(h: int, w: int, encoding: str, step: int, data: np.ndarray) -> object:
    return Image(
        header=header(), height=h, width=w, encoding=encoding, is_bigendian=0, step=step, data=data
    )


def compressed(fmt: str, data: bytes | np.ndarray) -> object:
    return Compressed(header=header(), format=fmt, data=np.frombuffer(bytes(data), np.uint8))


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    # As many zero rows as fit in ~900 KB of deflate: what an 875 KB bomb inflating to
    # 30000x30000 looks like, cut short to keep the benchmark's memory small.
    idat = zlib.compress(b"\0" * (1 + 3 * width) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(jpg: bytes, width: int, height: int) -> bytes:
    b = bytearray(jpg)
    i = bytes(b).index(b"\xff\xc0")
    b[i + 5 : i + 9] = bytes([height >> 8, height & 0xFF, width >> 8, width & 0xFF])
    return bytes(b)


class Inputs:
    """Draws one hostile input of each kind from a seeded generator: (kind, input, refused?)."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng = rng
        scene = cv2.GaussianBlur(
            rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), size / 16
        )
        self.scene = cv2.normalize(scene, None, 0, 255, cv2.NORM_MINMAX)
        self.size = size
        self.jpg = cv2.imencode(".jpg", self.scene)[1].tobytes()
        self.png = cv2.imencode(".png", self.scene)[1].tobytes()
        self.others = {}
        for ext in OTHER_FORMATS:
            img = self.scene[..., 0] if ext in (".pgm", ".pbm") else self.scene
            if ext in (".exr", ".hdr", ".pfm"):
                img = img.astype(np.float32) / 255
            try:
                ok, buf = cv2.imencode(ext, img)
            except cv2.error:
                continue
            if ok:
                self.others[ext] = buf.tobytes()
        self.others[".gif"] = b"GIF89a" + bytes(rng.integers(0, 256, 400, dtype=np.uint8))
        self.bomb_png = {n: png_claiming(n, n) for n in (30000, 40000)}
        self.bomb_jpg = {n: jpeg_claiming(self.jpg, n, n) for n in (30000, 40000, 5000)}
        self.kinds = [k for k in dir(self) if k.startswith("k_")]

    def draw(self) -> tuple[str, object, bool]:
        kind = self.kinds[int(self.rng.integers(len(self.kinds)))]
        value, refused = getattr(self, kind)()
        return kind[2:], value, refused

    # -- refused: each must give a zero command ------------------------------------------------

    def k_huge_step(self):
        w = int(self.rng.integers(1, 20))
        return raw(1, w, "rgb8", 4294967295, np.zeros(3 * w, np.uint8)), True

    def k_huge_height_width(self):
        h, w = (
            int(v) for v in self.rng.choice([1, 7, 4097, 30000, 40000, 2**31 - 1, 2**32 - 1], 2)
        )
        if h * w <= 1024 * 1024 and h <= 1024 and w <= 1024:
            h = 2**32 - 1
        return raw(h, w, "mono8", w, np.zeros(int(self.rng.integers(0, 4096)), np.uint8)), True

    def k_short_data(self):
        h, w = self.size, self.size
        data = np.zeros(int(self.rng.integers(0, 3 * h * w)), np.uint8)
        return raw(h, w, "rgb8", 3 * w, data), True

    def k_step_shorter_than_row(self):
        w = self.size
        return raw(2, w, "rgb8", int(self.rng.integers(0, 3 * w)), np.zeros(6 * w, np.uint8)), True

    def k_wrong_encoding(self):
        enc = str(self.rng.choice(["yuv422", "32FC1", "", "RGB8 ", "bayer_rggb8", "16SC1"]))
        if enc.strip().lower() in ("rgb8",):
            enc = "nv12"
        return raw(4, 4, enc, 12, np.zeros(48, np.uint8)), True

    def k_png_bomb(self):
        n = int(self.rng.choice(list(self.bomb_png)))
        return compressed("png", self.bomb_png[n]), True

    def k_jpeg_bomb(self):
        n = int(self.rng.choice(list(self.bomb_jpg)))
        fmt = str(self.rng.choice(["jpeg", "rgb8; jpeg compressed bgr8"]))
        return compressed(fmt, self.bomb_jpg[n]), True

    def k_truncated_jpeg(self):
        # not the last two bytes: cut there and closed again, it is the same file
        cut = self.jpg[: int(self.rng.integers(1, len(self.jpg) - 3))]
        if self.rng.random() < 0.5:
            cut += b"\xff\xd9"  # closed again: only libjpeg's warning tells
        return compressed("jpeg", cut), True

    def k_truncated_png(self):
        return compressed("png", self.png[: int(self.rng.integers(1, len(self.png) - 1))]), True

    def k_flipped_png(self):
        b = bytearray(self.png)
        for _ in range(int(self.rng.integers(1, 9))):
            b[int(self.rng.integers(0, len(b)))] ^= int(self.rng.integers(1, 256))
        # a flip that leaves the bytes as they were (or in ignored padding) is not a corruption
        return compressed("png", b), bytes(b) != self.png

    def k_other_format(self):
        ext = str(self.rng.choice(list(self.others)))
        fmt = str(self.rng.choice(["png", "jpeg", "rgb8; jpeg compressed bgr8", "bgr8; png"]))
        return compressed(fmt, self.others[ext]), True

    def k_swapped_label(self):
        return (
            (compressed("png", self.jpg), True)
            if self.rng.random() < 0.5
            else (
                compressed("jpeg", self.png),
                True,
            )
        )

    def k_wrong_label(self):
        fmt = str(self.rng.choice(["bmp", "", "tiff", "compressedDepth png", "webp", "raw"]))
        return compressed(fmt, self.png), True

    def k_random_bytes(self):
        n = int(self.rng.integers(0, 2048))
        head = self.rng.choice([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"])
        data = bytes(head) + bytes(self.rng.integers(0, 256, n, dtype=np.uint8))
        return compressed(str(self.rng.choice(["jpeg", "png"])), data), True

    def k_oversized_array(self):
        h, w = (int(v) for v in self.rng.choice([1025, 1500, 2048], 2))
        return np.zeros((h, w, 3), np.uint8), True

    def k_nan_array(self):
        a = self.rng.random((self.size, self.size, 3)).astype(np.float32)
        a[int(self.rng.integers(self.size))] = np.nan
        return a, True

    def k_odd_object(self):
        return [None, 0, "image", b"\0" * 12, [1, 2, 3], {"data": b""}][
            int(self.rng.integers(6))
        ], True

    # -- not refused by decoding: images, flipped JPEGs that stay valid --------------------------

    def k_flipped_jpeg(self):
        b = bytearray(self.jpg)
        for _ in range(int(self.rng.integers(1, 9))):
            b[int(self.rng.integers(2, len(b) - 2))] ^= 1 << int(self.rng.integers(0, 8))
        return compressed("jpeg", b), None  # refused when libjpeg notices; JPEG has no checksum

    def k_black_white_noise(self):
        which = int(self.rng.integers(3))
        if which == 2:
            img = self.rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)
        else:
            img = np.full((self.size, self.size, 3), 255 * which, np.uint8)
        if self.rng.random() < 0.5:
            return raw(self.size, self.size, "rgb8", 3 * self.size, img.reshape(-1)), False
        return compressed("jpeg", cv2.imencode(".jpg", img)[1].tobytes()), False

    def k_valid(self):
        if self.rng.random() < 0.5:
            return raw(self.size, self.size, "rgb8", 3 * self.size, self.scene.reshape(-1)), False
        if self.rng.random() < 0.5:
            return compressed("jpeg", self.jpg), False
        return compressed("png", self.png), False


def fuzz_steps(policy: Path, count: int, seed: int) -> dict:
    from lompo_core.runtime import Controller, ControllerConfig, PolicyRuntime

    runtime = PolicyRuntime(policy)
    config = ControllerConfig()
    controller = Controller(config, runtime.action_scaling, runtime.uncertainty_threshold)
    camera = runtime.sidecar.get("dataset", {}).get("camera") or {"width": 128}
    inputs = Inputs(np.random.default_rng(seed), int(camera["width"]))
    limit = config.max_linear_speed
    escaped: list[str] = []
    moved_on_refusal: list[str] = []
    over_limit: list[str] = []
    unexpected_ok: Counter = Counter()
    per_kind: dict[str, Counter] = defaultdict(Counter)
    times: dict[str, list[float]] = defaultdict(list)
    reasons: Counter = Counter()
    warm = min(500, count // 10)
    rss_before = rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    now = 0.0
    for i in range(count):
        if i == warm:
            rss_before = rss_mb()
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kind, value, refused = inputs.draw()
        now += 0.0125
        start = time.perf_counter()
        try:
            result = runtime.step(value)
            decision = controller.on_result(result, now)
        except Exception as exc:  # what the benchmark exists to catch
            escaped.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
            continue
        times[kind].append(time.perf_counter() - start)
        per_kind[kind]["ok" if result.ok else "refused"] += 1
        if not result.ok:
            reasons[result.reason[:60]] += 1
        if refused and result.ok:
            unexpected_ok[kind] += 1
        if not result.ok and np.any(decision.command != 0):
            moved_on_refusal.append(f"{kind}: {result.reason} -> {decision.command.tolist()}")
        speed = float(np.linalg.norm(decision.command))
        if not np.isfinite(speed) or speed > limit:
            over_limit.append(f"{kind}: {decision.command.tolist()}")
        if controller.state == "halted":
            controller.reset()
    rss_after = rss_mb()
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    all_times = np.concatenate([np.asarray(t) for t in times.values()])
    worst_kind = max(times, key=lambda k: max(times[k]))
    return {
        "calls": count,
        "exceptions_escaping": len(escaped),
        "escaped_examples": escaped[:5],
        "nonzero_commands_on_refused_input": len(moved_on_refusal),
        "moved_examples": moved_on_refusal[:5],
        "commands_outside_limit": len(over_limit),
        "limit_m_s": limit,
        "refusable_inputs_accepted": dict(unexpected_ok),
        "time_ms": {
            "p50": float(np.percentile(all_times, 50) * 1e3),
            "p99": float(np.percentile(all_times, 99) * 1e3),
            "max": float(all_times.max() * 1e3),
            "worst_kind": worst_kind,
        },
        "per_kind": {
            k: {
                **dict(per_kind[k]),
                "max_ms": round(max(times[k]) * 1e3, 2),
                "p50_ms": round(float(np.median(times[k])) * 1e3, 3),
            }
            for k in sorted(per_kind)
        },
        "rss_mb": {"before": round(rss_before, 1), "after": round(rss_after, 1)},
        "peak_rss_mb": {"before": round(peak_before, 1), "after": round(peak_after, 1)},
        "top_reasons": reasons.most_common(12),
    }


SIDECAR_CASES = {
    "uncertainty_threshold NaN": lambda s: s.update(uncertainty_threshold=float("nan")),
    "uncertainty_threshold 1e30": lambda s: s.update(uncertainty_threshold=1e30),
    "uncertainty_threshold 0": lambda s: s.update(uncertainty_threshold=0),
    "uncertainty_threshold -1": lambda s: s.update(uncertainty_threshold=-1),
    "action.max 1000": lambda s: s["action"].update(max=[1000.0] * 3),
    "action.max NaN": lambda s: s["action"].update(max=[float("nan")] * 3),
    "action.max Infinity": lambda s: s["action"].update(max=[float("inf")] * 3),
    "action.max 0": lambda s: s["action"].update(max=[0.0] * 3),
    "action names swapped": lambda s: s["action"].update(names=s["action"]["names"][::-1]),
    "action names repeated": lambda s: s["action"].update(names=["linear.x"] * 3),
    "action names too few": lambda s: s["action"].update(names=["a", "b"], max=[0.8, 0.8]),
    "action unit furlongs": lambda s: s["action"].update(unit="furlongs/fortnight"),
    "crop changed": lambda s: s["preprocessing"].update(crop=[0.0, 0.0, 1.0, 1.0]),
    "crop empty": lambda s: s["preprocessing"].update(crop=[0.5, 0.5, 0.5, 0.9]),
    "crop NaN": lambda s: s["preprocessing"].update(crop=[0.0, 0.0, 1.0, float("nan")]),
    "size 64.5": lambda s: s["preprocessing"].update(size=64.5),
    "control rate changed": lambda s: s.update(control_rate_hz=10.0),
    "control rate 1e9": lambda s: s.update(control_rate_hz=1e9),
    "camera 0x0": lambda s: s["dataset"].update(camera={"width": 0, "height": 0}),
    "deter shape huge": lambda s: s["inputs"][2].update(shape=[1, 2**31]),
    "manifest removed (accepted with a warning)": lambda s: s.pop("manifest_sha256"),
}


def fuzz_sidecars(policy: Path) -> dict:
    """Each hostile sidecar is a separate load; it must be refused in one line (or warned)."""
    import hashlib

    from lompo_core.runtime import PolicyRuntime
    from lompo_core.runtime.sidecar import manifest_sha256

    out: dict[str, str] = {}
    original = PolicyRuntime(policy).manifest_sha256  # what a launch pins
    with tempfile.TemporaryDirectory() as tmp:
        cases = {}
        for name, change in SIDECAR_CASES.items():
            cases[name] = (change, False)
            if "manifest" not in name:  # the forger who rewrites the manifest too
                cases[f"{name}, manifest rewritten"] = (change, True)
        cases["onnx edited, sha256 rewritten"] = ("onnx", False)
        cases["onnx edited, sha256 and manifest rewritten"] = ("onnx", True)
        cases["pinned hash, other policy"] = ("pin", False)
        for name, (change, resign) in cases.items():
            folder = Path(tmp) / "p"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(policy, folder)
            sidecar = json.loads((folder / "policy.json").read_text())
            pin = None
            if change == "onnx":
                data = bytearray((folder / "policy.onnx").read_bytes())
                data[-1] ^= 1
                (folder / "policy.onnx").write_bytes(bytes(data))
                sidecar["onnx_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
            elif change == "pin":
                pin = "0" * 64
            else:
                change(sidecar)
            if resign:
                onnx = (folder / "policy.onnx").read_bytes()
                sidecar["manifest_sha256"] = manifest_sha256(sidecar, onnx)
            (folder / "policy.json").write_text(json.dumps(sidecar))
            out[name] = _load(folder, pin)
            if out[name].startswith("ACCEPTED") and pin is None:
                # valid values under a rewritten manifest: only a pinned launch can tell
                pinned = _load(folder, original)
                out[name] = f"accepted unpinned; pinned: {pinned}"
    return out


def _load(folder: Path, pin: str | None) -> str:
    from lompo_core.errors import LompoError
    from lompo_core.runtime import Controller, ControllerConfig, PolicyRuntime

    try:
        rt = PolicyRuntime(folder, expected_sha256=pin)
        Controller(ControllerConfig(), rt.action_scaling, rt.uncertainty_threshold)
        return "ACCEPTED" + (f" with warning: {rt.warnings[0]}" if rt.warnings else "")
    except LompoError as exc:
        line = str(exc).replace(str(folder), "<policy>")
        return "refused: " + line if "\n" not in line else "MULTI-LINE: " + line
    except Exception as exc:  # an escape: reported as such
        return f"ESCAPED {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=ROOT / "models" / "drawer_close")
    parser.add_argument("--count", type=int, default=20_000, help="hostile step calls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    report = fuzz_steps(args.policy, args.count, args.seed)
    report["sidecars"] = fuzz_sidecars(args.policy)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    t = report["time_ms"]
    print(f"{report['calls']} hostile calls in {report['wall_s']} s ({args.policy})")
    print(f"  exceptions escaping:               {report['exceptions_escaping']}")
    print(f"  non-zero commands on refused input: {report['nonzero_commands_on_refused_input']}")
    print(
        f"  commands outside the physical limit ({report['limit_m_s']} m/s): "
        f"{report['commands_outside_limit']}"
    )
    print(f"  refusable inputs accepted:          {report['refusable_inputs_accepted'] or 0}")
    print(
        f"  time per call: p50 {t['p50']:.3f} ms, p99 {t['p99']:.2f} ms, "
        f"max {t['max']:.2f} ms ({t['worst_kind']})"
    )
    r, p = report["rss_mb"], report["peak_rss_mb"]
    print(
        f"  RSS {r['before']} -> {r['after']} MB after warm-up; peak {p['before']} -> {p['after']} MB"
    )
    print("  per kind (ok / refused, max ms):")
    for kind, c in report["per_kind"].items():
        print(f"    {kind:22s} {c.get('ok', 0):6d} / {c.get('refused', 0):6d}  {c['max_ms']:7.2f}")
    print("  hostile sidecars (one load each):")
    for name, verdict in report["sidecars"].items():
        print(f"    {name}: {verdict[:150]}")
    bad = (
        report["exceptions_escaping"]
        + report["nonzero_commands_on_refused_input"]
        + report["commands_outside_limit"]
        + sum(report["refusable_inputs_accepted"].values())
        + sum(
            ("ACCEPTED" in v and "warning" not in v) or "ESCAPED" in v or "MULTI" in v
            for v in report["sidecars"].values()
        )
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
