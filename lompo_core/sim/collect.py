"""``lompo collect``: run a behaviour policy in the sim and record each episode as a rosbag2.

The bags hold what a real robot would log, stamped on one clock at the control rate. Step k of an
episode publishes, in this order:

- the camera image at ``t0 + k*dt`` (``k = 0`` is the reset image),
- the reward and success flag received on arriving at that image, with the same stamp,
- the command chosen from that image, stamped ``dt/4`` later; it leads to image ``k + 1``.

The command after the last image leads nowhere and is not written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lompo_core import messages as m
from lompo_core.files import atomic_write_bytes

BASE_STAMP_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z: a fixed, readable epoch


@dataclass
class EpisodeRecord:
    bag: str
    seed: int
    policy: str
    steps: int
    success: bool
    first_success_step: int | None


def _storage(name: str):
    from rosbags.rosbag2 import StoragePlugin

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if name not in plugins:
        raise ValueError(f"unknown storage {name!r}; choose mcap or sqlite3")
    return plugins[name]


def record_episode(
    sim,
    policy,
    seed: int,
    bag_path: Path,
    storage: str = "mcap",
    distro: str = "jazzy",
    start_ns: int = BASE_STAMP_NS,
    max_linear_speed: float | None = None,
) -> EpisodeRecord:
    """Run one seeded episode and write it to ``bag_path`` (a rosbag2 folder) atomically.
    ``max_linear_speed`` (m/s): each command's norm is scaled down to it before it is sent and
    recorded, as the policy node's controller does; None: the sim's whole range."""
    from rosbags.rosbag2 import Writer

    ts = m.typestore(distro)
    dt_ns = int(round(1e9 / sim.control_rate_hz))
    # rosbags names the storage file after its folder: build under a hidden parent, then rename.
    tmp = bag_path.parent / ".partial" / bag_path.name
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    step = sim.reset(seed)
    policy.reset(rng)
    first_success = None
    # rosbag2 format 9 is Jazzy's; Humble's rosbag2 reads only up to format 8.
    version = 9 if distro == "jazzy" else 8
    kit = m.kit(distro)
    with Writer(tmp, version=version, storage_plugin=_storage(storage)) as writer:
        conn_image = writer.add_connection(m.IMAGE_TOPIC, m.IMAGE_TYPE, typestore=ts)
        conn_cmd = writer.add_connection(m.COMMAND_TOPIC, m.TWIST_STAMPED_TYPE, typestore=ts)
        conn_reward = writer.add_connection(m.REWARD_TOPIC, m.FLOAT32_TYPE, typestore=ts)
        conn_success = writer.add_connection(m.SUCCESS_TOPIC, m.BOOL_TYPE, typestore=ts)
        k = 0
        while True:
            t = start_ns + k * dt_ns
            writer.write(conn_image, t, ts.serialize_cdr(kit.image(step.image, t), m.IMAGE_TYPE))
            writer.write(conn_reward, t, ts.serialize_cdr(kit.float32(step.reward), m.FLOAT32_TYPE))
            writer.write(conn_success, t, ts.serialize_cdr(kit.bool(step.success), m.BOOL_TYPE))
            if step.success and first_success is None:
                first_success = k
            if step.terminal or step.truncated:
                break
            action = policy.act(step.state)
            if max_linear_speed is not None:
                action = sim.action_scaling.within_norm(action, max_linear_speed)
            t_cmd = t + dt_ns // 4
            twist = kit.twist_stamped(sim.action_scaling.to_physical(action), t_cmd)
            writer.write(conn_cmd, t_cmd, ts.serialize_cdr(twist, m.TWIST_STAMPED_TYPE))
            step = sim.step(action)
            k += 1
    tmp.rename(bag_path)
    if not any(tmp.parent.iterdir()):
        tmp.parent.rmdir()
    name = getattr(policy, "current", policy.name)
    return EpisodeRecord(bag_path.name, seed, name, k, first_success is not None, first_success)


def collect(
    policy_name: str,
    episodes: int,
    out: Path,
    seed: int = 0,
    storage: str = "mcap",
    distro: str = "jazzy",
    image_size: int = 64,
    max_steps: int = 150,
    overwrite: bool = False,
    progress: bool = True,
    max_linear_speed: float | None = None,
) -> list[EpisodeRecord]:
    """Record ``episodes`` episodes with seeds ``seed .. seed+episodes-1`` into ``out``, the
    commands limited to ``max_linear_speed`` m/s (None: the sim's whole range)."""
    from tqdm import tqdm

    from lompo_core.sim.drawer import DrawerCloseSim
    from lompo_core.sim.policies import make_policy

    out = Path(out)
    names = [f"episode_{seed + i:06d}" for i in range(episodes)]
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out / existing[0]} already exists ({len(existing)} of the {episodes} bags); "
            "pass --overwrite to replace them or choose another --out or --seed"
        )
    out.mkdir(parents=True, exist_ok=True)
    policy = make_policy(policy_name)
    sim = DrawerCloseSim(image_size=image_size, max_steps=max_steps)
    dt_s = 1.0 / sim.control_rate_hz
    records: list[EpisodeRecord] = []
    try:
        bar = tqdm(names, desc=f"collect {policy_name}", unit="ep", disable=not progress)
        for i, name in enumerate(bar):
            if (out / name).exists():
                shutil.rmtree(out / name)
            # Episodes sit one after another on the clock, one second apart.
            start = BASE_STAMP_NS + int((seed + i) * (max_steps + 1 + 1 / dt_s) * dt_s * 1e9)
            rec = record_episode(
                sim, policy, seed + i, out / name, storage, distro, start, max_linear_speed
            )
            records.append(rec)
            bar.set_postfix(success=f"{np.mean([r.success for r in records]):.0%}")
    finally:
        sim.close()
    summary = {
        "policy": policy_name,
        "storage": storage,
        "distro": distro,
        "image_size": image_size,
        "control_rate_hz": sim.control_rate_hz,
        "action_scaling": sim.action_scaling.as_dict(),
        "max_linear_speed": max_linear_speed,
        "episodes": [r.__dict__ for r in records],
    }
    atomic_write_bytes(out / f"collect_{seed:06d}.json", json.dumps(summary, indent=2).encode())
    return records
