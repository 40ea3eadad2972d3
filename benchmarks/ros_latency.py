"""Image -> command over Fast DDS: a camera in this process, policy_node in another.

Starts ``policy_node`` (the shipped policy, the package's parameter file) as a process on
loopback, then for each camera kind:

- ping-pong: publish one frame, wait for its command; the latency is the command's arrival
  minus the frame's stamp (one clock: both ends run on this machine); p50 and p99;
- stream: ``--stream`` frames at 30 Hz without waiting; how many were answered, for a
  best-effort and a reliable image subscription (the node's ``image_reliability``).

    python benchmarks/policy_latency.py   # the policy step alone, without ROS
    python benchmarks/ros_latency.py --frames 300 --stream 60

Needs rclpy (``pip install '.[ros]'``); runs the node from ros2_ws/src/lompo_ros directly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ros2_ws" / "src" / "lompo_ros"
IMAGE_TOPIC = "/lompo_bench/image"
COMMAND_TOPIC = "/lompo_bench/command"
KINDS = {"raw 64x64": (64, 64, "raw"), "raw 640x480": (480, 640, "raw"), "jpeg 640x480": (480, 640, "compressed")}  # fmt: skip


def start_node(transport: str, reliability: str, domain: str) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PKG), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "lompo_ros.policy_node", "--ros-args", "--params-file",
           str(PKG / "config" / "drawer_close.yaml"), "-p", f"model_path:={REPO / 'models' / 'drawer_close'}",
           "-p", f"image_topic:={IMAGE_TOPIC}", "-p", f"command_topic:={COMMAND_TOPIC}",
           "-p", f"image_transport:={transport}", "-p", f"image_reliability:={reliability}",
           "--log-level", "warn"]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )


def frame_message(kit, rgb: np.ndarray, transport: str, stamp_ns: int):
    import cv2

    if transport == "raw":
        return kit.image(rgb, stamp_ns)
    ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return kit.compressed_image(jpeg.tobytes(), "jpeg", stamp_ns)


def measure(rclpy, kind: str, reliability: str, frames: int, stream: int, domain: str) -> dict:
    from geometry_msgs.msg import TwistStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from lompo_core.messages import MessageKit

    h, w, transport = KINDS[kind]
    kit = MessageKit.from_ros()
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)]
    node = rclpy.create_node("lompo_bench_camera")
    arrivals: list[int] = []
    node.create_subscription(
        TwistStamped, COMMAND_TOPIC, lambda _: arrivals.append(time.time_ns()), 1000
    )
    msg_type = Image if transport == "raw" else CompressedImage
    camera = node.create_publisher(
        msg_type, IMAGE_TOPIC, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    )
    proc = start_node(transport, reliability, domain)

    def spin_until(cond, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.002)
            if cond():
                return True
        return False

    try:
        # Wait for the node: answer to a first frame (model loaded, subscription matched).
        ready = False
        for _ in range(60):
            camera.publish(frame_message(kit, pictures[0], transport, time.time_ns()))
            if spin_until(lambda: bool(arrivals), 0.5):
                ready = True
                break
        if not ready:
            raise SystemExit(f"{kind}: policy_node never answered")
        spin_until(lambda: False, 0.3)
        latencies, lost = [], 0
        for k in range(frames):
            arrivals.clear()
            stamp = time.time_ns()
            camera.publish(frame_message(kit, pictures[k % 8], transport, stamp))
            if spin_until(lambda: bool(arrivals), 1.0):
                latencies.append((arrivals[0] - stamp) / 1e6)
            else:
                lost += 1
            spin_until(lambda: False, 0.01)
        arrivals.clear()
        t0 = time.monotonic()
        for k in range(stream):
            camera.publish(frame_message(kit, pictures[k % 8], transport, time.time_ns()))
            spin_until(lambda: False, max(0.0, t0 + (k + 1) / 30 - time.monotonic()))
        spin_until(lambda: len(arrivals) >= stream, 2.0)
        answered = len(arrivals)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
        node.destroy_node()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "kind": kind,
        "image_reliability": reliability,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "ping_pong_lost": lost,
        "stream_answered": f"{answered}/{stream}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="ping-pong frames per kind")
    parser.add_argument("--stream", type=int, default=60, help="frames streamed at 30 Hz")
    parser.add_argument("--domain", default="91", help="ROS_DOMAIN_ID for the run")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    args = parser.parse_args()
    os.environ.update(ROS_DOMAIN_ID=args.domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    import rclpy

    rclpy.init()
    records = []
    try:
        for kind in KINDS:
            for reliability in ("best_effort", "reliable"):
                r = measure(rclpy, kind, reliability, args.frames, args.stream, args.domain)
                records.append(r)
                print(
                    f"{kind:13s} {reliability:11s}  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms  lost {r['ping_pong_lost']}  "
                    f"stream answered {r['stream_answered']}",
                    flush=True,
                )
    finally:
        rclpy.try_shutdown()
    if args.json:
        print(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
