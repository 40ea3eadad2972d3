import json
import subprocess
import sys

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from lompo_core import messages as m
from lompo_core.sim.collect import collect

TYPES = {
    m.IMAGE_TOPIC: m.IMAGE_TYPE,
    m.COMMAND_TOPIC: m.TWIST_STAMPED_TYPE,
    m.REWARD_TOPIC: m.FLOAT32_TYPE,
    m.SUCCESS_TOPIC: m.BOOL_TYPE,
}


@pytest.mark.parametrize(("storage", "distro"), [("mcap", "jazzy"), ("sqlite3", "humble")])
def test_collected_bag_reads_back(tmp_path, storage, distro):
    records = collect("expert", 2, tmp_path, seed=7, storage=storage, distro=distro, progress=False)
    assert [r.success for r in records] == [True, True]
    for rec in records:
        with AnyReader([tmp_path / rec.bag], default_typestore=m.typestore(distro)) as reader:
            assert {c.topic: c.msgtype for c in reader.connections} == TYPES
            stamps: dict[str, list[int]] = {t: [] for t in TYPES}
            last_success = None
            for conn, t, raw in reader.messages():
                msg = reader.deserialize(raw, conn.msgtype)
                stamps[conn.topic].append(t)
                if conn.topic in (m.IMAGE_TOPIC, m.COMMAND_TOPIC):
                    assert m.stamp_ns(msg.header) == t
                if conn.topic == m.IMAGE_TOPIC:
                    assert (msg.height, msg.width, msg.encoding) == (64, 64, "rgb8")
                if conn.topic == m.SUCCESS_TOPIC:
                    last_success = msg.data
        steps = rec.steps
        # One image, reward and success per control step (plus the reset image); one command
        # between consecutive images.
        assert len(stamps[m.IMAGE_TOPIC]) == steps + 1
        assert len(stamps[m.REWARD_TOPIC]) == len(stamps[m.SUCCESS_TOPIC]) == steps + 1
        assert len(stamps[m.COMMAND_TOPIC]) == steps
        for s in stamps.values():
            assert np.all(np.diff(s) > 0)
        img, cmd = np.array(stamps[m.IMAGE_TOPIC]), np.array(stamps[m.COMMAND_TOPIC])
        assert np.all((img[:-1] < cmd) & (cmd < img[1:]))
        np.testing.assert_allclose(np.diff(img), 12_500_000)
        assert last_success is True


def test_collect_refuses_to_overwrite_and_writes_a_summary(tmp_path):
    collect("random", 1, tmp_path, seed=0, max_steps=5, progress=False)
    summary = json.loads((tmp_path / "collect_000000.json").read_text())
    assert summary["episodes"][0]["steps"] == 5 and summary["action_scaling"]["unit"] == "m/s"
    with pytest.raises(FileExistsError, match="episode_000000"):
        collect("random", 1, tmp_path, seed=0, max_steps=5, progress=False)
    collect("random", 1, tmp_path, seed=0, max_steps=5, progress=False, overwrite=True)
    assert not (tmp_path / ".partial").exists()


def test_collect_limits_and_records_the_command_speed(tmp_path):
    """--max-linear-speed: the commands sent and recorded are scaled down to the limit, as the
    policy node's controller would; the scripted expert, which asks for more, still succeeds."""
    records = collect("expert", 1, tmp_path, seed=7, progress=False, max_linear_speed=0.5)
    assert records[0].success
    with AnyReader([tmp_path / records[0].bag], default_typestore=m.typestore("jazzy")) as reader:
        norms = [
            np.linalg.norm([(msg := reader.deserialize(raw, c.msgtype)).twist.linear.x,
                            msg.twist.linear.y, msg.twist.linear.z])
            for c, _, raw in reader.messages()
            if c.topic == m.COMMAND_TOPIC
        ]  # fmt: skip
    assert max(norms) <= 0.5 + 1e-6 and max(norms) > 0.499, max(norms)
    assert json.loads((tmp_path / "collect_000007.json").read_text())["max_linear_speed"] == 0.5


def test_cli_collect_larger_images(tmp_path):
    out = tmp_path / "bags"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lompo_core.cli",
            "collect",
            "--policy",
            "expert",
            "--episodes",
            "1",
            "--out",
            str(out),
            "--image-size",
            "128",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1/1 episodes succeeded" in proc.stdout
    with AnyReader([out / "episode_000000"], default_typestore=m.typestore()) as reader:
        conn = next(c for c in reader.connections if c.topic == m.IMAGE_TOPIC)
        _, _, raw = next(reader.messages(connections=[conn]))
        msg = reader.deserialize(raw, conn.msgtype)
        assert (msg.height, msg.width, msg.step) == (128, 128, 384)


def test_cli_help_for_every_command():
    from lompo_core.cli import COMMANDS

    out = subprocess.run(
        [sys.executable, "-m", "lompo_core.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in COMMANDS:
        assert name in out
    for name in COMMANDS:
        proc = subprocess.run(
            [sys.executable, "-m", "lompo_core.cli", name, "--help"], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert "example:" in proc.stdout and f"lompo {name}" in proc.stdout
