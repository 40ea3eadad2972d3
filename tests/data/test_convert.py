"""lompo convert on bags the tests write (every storage, encoding, action type) and real collect bags."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bagfactory import command_value, frame_index
from rosbags.highlevel import AnyReader

from lompo_core import cli
from lompo_core import messages as m
from lompo_core.data.convert import convert
from lompo_core.data.convert_config import ActionSpec, ConvertConfig
from lompo_core.data.dataset import EpisodeDataset, file_sha256
from lompo_core.errors import BagError, DatasetError, LompoError
from lompo_core.image import Preprocessing


def episodes(out: Path) -> list[dict[str, np.ndarray]]:
    ds = EpisodeDataset(out)
    return [ds.load(i) for i in range(len(ds))]


def expected_action(k: int, dim: int = 3, limit: float = 0.8) -> np.ndarray:
    return np.clip(command_value(k, dim) / limit, -1, 1).astype(np.float32)


def assert_aligned(ep: dict[str, np.ndarray], first_frame: int = 0, factor: int = 1, dim: int = 3):
    """image[t] is camera frame (first + t) * factor; action[t] the command after image t-1."""
    n = len(ep["image"])
    assert ep["image"].shape == (n, 64, 64, 3)
    assert ep["action"].shape == (n, dim) and ep["action"].dtype == np.float32
    np.testing.assert_array_equal(ep["action"][0], 0)
    for t in range(n):
        assert frame_index(ep["image"][t]) == (first_frame + t) * factor, t
    for t in range(1, n):
        np.testing.assert_allclose(
            ep["action"][t], expected_action(first_frame + t - 1, dim), atol=1e-6
        )
    assert ep["is_first"].tolist() == [True] + [False] * (n - 1)
    assert ep["is_last"].tolist() == [False] * (n - 1) + [True]


# -- the bags lompo collect writes, with no options ---------------------------------------------
def test_collect_bags_convert_with_no_options(collect_bags: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    assert cli.main(["convert", str(collect_bags), "--out", str(out), "--quiet"]) == 0
    assert "2 new episode(s)" in capsys.readouterr().out
    ds = EpisodeDataset(out)
    assert len(ds) == 2 and ds.meta["rate_hz"] == pytest.approx(80.0)
    assert ds.meta["action"] == {
        "names": ["linear.x", "linear.y", "linear.z"],
        "unit": "m/s",
        "max": [0.8, 0.8, 0.8],
        "normalised": "action = clip(command / max, -1, 1)",
    }
    summary = json.loads(next(collect_bags.glob("collect_000000.json")).read_text())
    for i, bag in enumerate(sorted(p for p in collect_bags.iterdir() if p.is_dir())):
        with AnyReader([bag]) as reader:
            by_topic: dict[str, list] = {m.IMAGE_TOPIC: [], m.COMMAND_TOPIC: []}
            for conn, _, raw in reader.messages():
                if conn.topic in by_topic:
                    by_topic[conn.topic].append(reader.deserialize(raw, conn.msgtype))
        ep = ds.load(i)
        images = np.stack([im.data.reshape(64, 64, 3) for im in by_topic[m.IMAGE_TOPIC]])
        commands = np.stack([m.twist_linear(c) for c in by_topic[m.COMMAND_TOPIC]])
        np.testing.assert_array_equal(ep["image"], images)  # 64x64, no crop: the same pixels
        # The known action sequence: the bag's commands / 0.8, one step later (action[0] = 0).
        np.testing.assert_allclose(ep["action"][1:], commands / 0.8, atol=1e-6)
        np.testing.assert_array_equal(ep["action"][0], 0)
        assert len(ep["image"]) == len(commands) + 1
        # The expert succeeds: the last step is the first success step, terminal, reward 1.
        assert ep["is_terminal"][-1] and not ep["is_terminal"][:-1].any()
        assert ep["reward"][-1] == 1.0 and ep["reward"][:-1].sum() == 0
        assert ds.meta["episodes"][i]["success"] and ds.meta["episodes"][i]["end"] == "success"
    assert summary["episodes"][0]["steps"] == len(ds.load(0)["image"]) - 1
    formats = sorted(s["format"] for s in ds.meta["sources"])
    assert formats == ["rosbag2-db3", "rosbag2-mcap"]
    for s in ds.meta["sources"]:
        assert not Path(s["path"]).is_absolute() and s["size_bytes"] > 0
        assert s["fingerprint"].startswith("xxh3_128-sampled:")
    assert ds.meta["preprocessing"] == Preprocessing().as_dict()
    for e in ds.meta["episodes"]:
        assert file_sha256(out / e["file"]) == e["sha256"]


# -- storages, distros, encodings, sizes, action types ----------------------------------------
CASES = [
    dict(storage="mcap", distro="jazzy", encoding="rgb8", pad=4, action="TwistStamped"),
    dict(storage="sqlite3", distro="humble", encoding="bgr8", action="Twist"),
    dict(storage="mcap", distro="humble", encoding="jpeg", action="Float64MultiArray"),
    dict(storage="mcap", distro="jazzy", encoding="jpeg", width=640, height=480),  # 1/4 decode
    dict(storage="sqlite3", distro="jazzy", encoding="png", action="Float32MultiArray"),
    dict(storage="rosbag1", encoding="rgba8", pad=2, action="TwistStamped"),
    dict(storage="rosbag1", encoding="bgra8", action="Float64MultiArray", width=96, height=64),
    dict(storage="mcap", distro="jazzy", encoding="mono8", width=64, height=64),
    dict(storage="mcap", distro="jazzy", encoding="rgb8", lz4=True),  # lz4 chunks
    dict(storage="sqlite3", distro="humble", encoding="mono16", width=130, height=70, pad=6),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_every_storage_encoding_and_action_type(make_bag, tmp_path: Path, case: dict) -> None:
    path, spec = make_bag(**case)
    report = convert([path], tmp_path / "ds", ConvertConfig())
    assert report.episodes == 1 and report.steps == spec.n and report.rate_hz == pytest.approx(10)
    (ep,) = episodes(tmp_path / "ds")
    if case["encoding"].startswith("mono"):
        # Grey frames keep only the green channel: check alignment through the actions alone.
        for t in range(1, spec.n):
            np.testing.assert_allclose(ep["action"][t], expected_action(t - 1), atol=1e-6)
    else:
        assert_aligned(ep)
    meta = EpisodeDataset(tmp_path / "ds").meta
    src = meta["sources"][0]
    assert src["image_size"] == [spec.width, spec.height]
    assert src["format"] == {"rosbag1": "rosbag1", "mcap": "rosbag2-mcap"}.get(
        spec.storage, "rosbag2-db3"
    )
    if "MultiArray" in spec.action:
        assert meta["action"]["names"] == ["data[0]", "data[1]", "data[2]"]


def test_command_stamped_with_its_image_stamp_counts_for_the_next_image(make_bag, tmp_path):
    path, spec = make_bag(command_stamp="image")
    convert([path], tmp_path / "ds", ConvertConfig())
    assert_aligned(episodes(tmp_path / "ds")[0])


def test_faster_camera_is_resampled_at_the_inferred_control_rate(make_bag, tmp_path) -> None:
    path, spec = make_bag(camera_factor=3, n=12)
    report = convert([path], tmp_path / "ds", ConvertConfig())
    assert report.rate_hz == pytest.approx(10) and report.frames_read == 34
    (ep,) = episodes(tmp_path / "ds")
    assert_aligned(ep, factor=3)
    assert report.frames_used == 12


def test_commands_faster_than_the_camera_give_steps_at_the_camera_rate(make_bag, tmp_path):
    # A 30 Hz teleop and a 10 Hz camera: one step per frame, with the last command before it.
    path, spec = make_bag(command_factor=3, n=20)
    report = convert([path], tmp_path / "ds", ConvertConfig())
    meta = EpisodeDataset(tmp_path / "ds").meta
    assert report.rate_hz == pytest.approx(10) and meta["rate_hz"] == pytest.approx(10)
    assert meta["sources"][0]["action_rate_hz"] == pytest.approx(30)
    (ep,) = episodes(tmp_path / "ds")
    assert len(ep["image"]) == 20 and report.frames_used == 20
    assert_aligned(ep)


@pytest.mark.parametrize("ahead_s", [0.2, 2.0])
def test_a_camera_clock_ahead_is_named_and_log_stamps_align_it(make_bag, tmp_path, ahead_s):
    path, _ = make_bag(image_clock_s=ahead_s, n=40)
    out = tmp_path / "ds"
    code = cli.main(["convert", str(path), "--out", str(out), "--quiet"])
    if code == 0:  # accepted by header stamps: then not as the bag's clock has it
        ep = episodes(out)[0]
        assert not all(
            np.allclose(ep["action"][t], expected_action(t - 1, 3), atol=1e-6)
            for t in range(1, len(ep["action"]))
        )
        shutil.rmtree(out)
    assert cli.main(["convert", str(path), "--out", str(out), "--quiet", "--stamps", "log"]) == 0
    (ep,) = episodes(out)
    assert_aligned(ep)
    assert EpisodeDataset(out).meta["alignment"]["stamps"] == "log"


def test_a_late_stamp_error_names_the_offset_and_the_option(make_bag, tmp_path, capsys):
    path, _ = make_bag(image_clock_s=-2.0, n=40)  # header stamps 2 s behind the bag's clock
    assert cli.main(["convert", str(path), "--out", str(tmp_path / "ds"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "-2 s from its log time" in err and "--stamps log" in err, err


def test_crop_from_config_and_given_rate(make_bag, tmp_path) -> None:
    path, _ = make_bag(width=200, height=100)
    config = ConvertConfig(rate_hz=10.0, preprocessing=Preprocessing(crop=(0.25, 0, 0.75, 1)))
    convert([path], tmp_path / "ds", config)
    meta = EpisodeDataset(tmp_path / "ds").meta
    assert (
        meta["preprocessing"]["crop"] == [0.25, 0.0, 0.75, 1.0] and meta["rate_source"] == "given"
    )
    assert_aligned(episodes(tmp_path / "ds")[0])


# -- episodes: gaps, success, several per bag, cuts -----------------------------------------------
def test_gap_splits_a_bag_into_episodes(make_bag, tmp_path) -> None:
    path, _ = make_bag(n=30, skip_images=tuple(range(12, 16)))  # 0.5 s without images
    report = convert([path], tmp_path / "ds", ConvertConfig())
    first, second = episodes(tmp_path / "ds")
    assert report.episodes == 2
    assert_aligned(first)
    assert len(first["image"]) == 12 and len(second["image"]) == 14
    assert frame_index(second["image"][0]) == 16
    np.testing.assert_array_equal(second["action"][0], 0)  # a new episode starts from rest
    np.testing.assert_allclose(second["action"][1], expected_action(16), atol=1e-6)
    ends = [e["end"] for e in EpisodeDataset(tmp_path / "ds").meta["episodes"]]
    assert ends == ["image gap", "end of bag"]


def test_success_ends_the_episode_as_terminal(make_bag, tmp_path) -> None:
    path, _ = make_bag(n=25, reward="both", success_at=9)
    convert([path], tmp_path / "ds", ConvertConfig())
    eps = episodes(tmp_path / "ds")
    # The flag stays true after success (latched): no new episode ends on it until it drops.
    assert len(eps[0]["image"]) == 10 and eps[0]["is_terminal"][-1] and eps[0]["reward"][-1] == 1
    assert eps[0]["reward"][:-1].sum() == 0 and not eps[0]["is_terminal"][:-1].any()
    assert all(not e["is_terminal"].any() for e in eps[1:])
    meta = EpisodeDataset(tmp_path / "ds").meta
    assert meta["episodes"][0]["success"] and meta["counts"]["successes"] == 1


def test_success_topic_as_sparse_reward(make_bag, tmp_path) -> None:
    path, _ = make_bag(n=15, reward="success", success_at=6)
    config = ConvertConfig(reward="success")
    convert([path], tmp_path / "ds", config)
    ep = episodes(tmp_path / "ds")[0]
    assert ep["reward"].tolist() == [0.0] * 6 + [1.0] and ep["is_terminal"][-1]


def test_max_length_cuts_without_terminal(make_bag, tmp_path) -> None:
    path, _ = make_bag(n=25)
    convert([path], tmp_path / "ds", ConvertConfig(max_length=10))
    eps = episodes(tmp_path / "ds")
    assert [len(e["image"]) for e in eps] == [10, 10, 5]
    assert frame_index(eps[1]["image"][0]) == 10
    assert not any(e["is_terminal"].any() for e in eps)
    assert_aligned(eps[0])


def test_labels_file_and_reward_none(make_bag, tmp_path) -> None:
    a, _ = make_bag("a", reward="none")
    b, _ = make_bag("b", reward="none")
    labels = tmp_path / "labels.yaml"
    labels.write_text("a: success\nb#0: failure\n")
    convert([a, b], tmp_path / "ds", ConvertConfig(reward="labels", labels=labels))
    ea, eb = episodes(tmp_path / "ds")
    assert ea["reward"][-1] == 1 and ea["is_terminal"][-1] and ea["reward"][:-1].sum() == 0
    assert eb["reward"].sum() == 0 and not eb["is_terminal"].any()
    convert([a], tmp_path / "none", ConvertConfig(reward="none"))
    assert episodes(tmp_path / "none")[0]["reward"].sum() == 0
    labels.write_text("a: success\n")
    with pytest.raises(BagError, match="episode 0 has no label"):
        convert([a, b], tmp_path / "ds2", ConvertConfig(reward="labels", labels=labels))


def test_clipping_is_counted(make_bag, tmp_path) -> None:
    path, spec = make_bag()
    config = ConvertConfig(action=ActionSpec(max=0.2))
    report = convert([path], tmp_path / "ds", config)
    cmds = np.abs(np.array(spec.commands)) / 0.2
    assert report.clipped_fraction == pytest.approx((cmds > 1).mean())
    assert 0 < report.clipped_fraction < 1
    assert np.abs(episodes(tmp_path / "ds")[0]["action"]).max() == 1.0


# -- output: atomic, overwrite, append --------------------------------------------------------
def test_existing_output_refused_overwrite_and_append_idempotent(make_bag, tmp_path, capsys):
    a, _ = make_bag("a")
    b, _ = make_bag("b", storage="sqlite3")
    out = tmp_path / "ds"
    assert cli.main(["convert", str(a), "--out", str(out), "--quiet"]) == 0
    assert cli.main(["convert", str(a), "--out", str(out), "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err
    first = json.loads((out / "meta.json").read_text())
    report = convert([a.parent], out, ConvertConfig(), append=True)  # the folder holds a and b
    assert (report.bags_converted, report.bags_skipped, report.episodes_total) == (1, 1, 2)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["episodes"][0] == first["episodes"][0] and len(meta["sources"]) == 2
    again = convert([a, b], out, ConvertConfig(), append=True)
    assert (again.bags_converted, again.bags_skipped) == (0, 2)
    assert json.loads((out / "meta.json").read_text())["content_hash"] == meta["content_hash"]
    assert sorted(p.name for p in out.iterdir()) == [
        "episode_000000.npz",
        "episode_000001.npz",
        "meta.json",
    ]
    with pytest.raises(LompoError, match="preprocessing"):
        convert([b], out, ConvertConfig(preprocessing=Preprocessing(size=32)), append=True)
    report = convert([b], out, ConvertConfig(), overwrite=True)
    assert report.episodes_total == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_append_to_a_dataset_without_fingerprints_is_refused(make_bag, tmp_path) -> None:
    a, _ = make_bag("a")
    b, _ = make_bag("b")
    out = tmp_path / "ds"
    convert([a], out, ConvertConfig())
    meta = json.loads((out / "meta.json").read_text())
    for s in meta["sources"]:  # what lompo 0.1.0 wrote: a sha256 of every byte
        s["sha256"] = "0" * 64
        del s["fingerprint"]
    (out / "meta.json").write_text(json.dumps(meta))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(DatasetError, match="sources have no fingerprint"):
        convert([a, b], out, ConvertConfig(), append=True)
    assert sorted(p.name for p in out.iterdir()) == before


# -- config ---------------------------------------------------------------------------------------
def test_yaml_config_and_flags_override(make_bag, tmp_path, capsys) -> None:
    path, _ = make_bag(image_topic="/cam/image", action_topic="/arm/cmd", reward="none")
    config = tmp_path / "robot.yaml"
    config.write_text(
        "topics: {image: /cam/image, action: /arm/cmd}\n"
        "reward: none\n"
        "action: {max: [0.5, 0.5, 0.5], unit: m/s}\n"
        "preprocessing: {crop: [0, 0, 1, 1], size: 64}\n"
        "gap_s: 1.0\n"
    )
    out = tmp_path / "ds"
    args = ["convert", str(path), "--out", str(out), "--config", str(config), "--quiet"]
    assert cli.main([*args, "--rate", "10"]) == 0
    meta = EpisodeDataset(out).meta
    assert meta["action"]["max"] == [0.5] * 3 and meta["alignment"]["gap_s"] == 1.0
    assert meta["topics"]["image"] == "/cam/image" and meta["rate_source"] == "given"
    np.testing.assert_allclose(
        episodes(out)[0]["action"][1], np.clip(command_value(0) / 0.5, -1, 1), atol=1e-6
    )
    config.write_text("topics: {imgae: /cam}\n")
    assert cli.main([*args, "--overwrite"]) == 1
    assert "unknown key(s) imgae" in capsys.readouterr().err


def test_help_explains_with_an_example(capsys) -> None:
    for command in ("convert", "inspect"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        assert "example:" in text and f"lompo {command}" in text


def test_config_validation() -> None:
    with pytest.raises(LompoError, match="reward must be"):
        ConvertConfig(reward="dense")
    with pytest.raises(LompoError, match="labels file"):
        ConvertConfig(reward="labels")
    with pytest.raises(LompoError, match="tolerance"):
        replace(ConvertConfig(), tolerance_s=0.06).timing(10.0)


def test_overwrite_replaces_only_a_lompo_dataset(make_bag, tmp_path, capsys) -> None:
    a, _ = make_bag("a")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my own file")
    assert cli.main(["convert", str(a), "--out", str(notes), "--overwrite", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "not a lompo dataset" in err and "Traceback" not in err
    assert (notes / "todo.txt").read_text() == "my own file"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_overlapping_an_input_bag_is_refused(make_bag, tmp_path, capsys) -> None:
    a, _ = make_bag("a")
    before = sorted(p.name for p in a.iterdir())
    for out in (a, a / "dataset", a.parent):
        assert cli.main(["convert", str(a), "--out", str(out), "--overwrite", "--quiet"]) == 1
        assert "overlap" in capsys.readouterr().err
    assert sorted(p.name for p in a.iterdir()) == before


@pytest.mark.parametrize(
    ("spec", "flags", "words"),
    [
        (dict(image_topic="/cam/image"), ["--image-topic", "/cam/image"], "image topic"),
        (dict(reward="none"), ["--reward", "none"], "reward"),
        (dict(action="Float64MultiArray"), [], "recorded the same way"),
    ],
    ids=["camera topic", "reward source", "action type"],
)
def test_append_refuses_bags_recorded_otherwise(make_bag, tmp_path, capsys, spec, flags, words):
    a, _ = make_bag("a")
    b, _ = make_bag("b", **spec)
    out = tmp_path / "ds"
    assert cli.main(["convert", str(a), "--out", str(out), "--quiet"]) == 0
    before = (out / "meta.json").read_text()
    assert cli.main(["convert", str(b), "--out", str(out), "--append", "--quiet", *flags]) == 1
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert (out / "meta.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_killed_conversion_leaves_nothing_and_its_leftovers_are_collected(
    make_bag, tmp_path, sig
) -> None:
    bag, _ = make_bag("big", n=600, width=160, height=120)
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "lompo_core.cli", "convert", str(bag), "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--quiet"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".ds.partial-*/episode_*")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the conversion ended before it wrote an episode"
        time.sleep(0.002)
    os.kill(proc.pid, sig)
    code = proc.wait(30)
    assert not out.exists()
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        left = sorted(p.name.split("-")[0] for p in tmp_path.iterdir() if p.name.startswith("."))
        assert left == [".ds.lock", ".ds.partial"]  # the kernel released the lock itself
    else:
        assert code == 130 and b"interrupted" in proc.stderr.read()
    # The next conversion into the same --out collects what a dead one left behind.
    assert subprocess.run([*cmd, "--quiet"], timeout=120).returncode == 0
    assert out.is_dir() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_one_conversion_at_a_time_writes_a_dataset(make_bag, tmp_path) -> None:
    from lompo_core.files import exclusive

    a, _ = make_bag("a")
    out = tmp_path / "ds"
    convert([a], out, ConvertConfig())
    before = (out / "meta.json").read_text()
    with exclusive(out, "lompo convert"):  # what a running conversion holds
        for kw in (dict(append=True), dict(overwrite=True)):
            with pytest.raises(
                LompoError, match=f"another lompo convert is writing it \\(pid {os.getpid()}\\)"
            ):
                convert([a], out, ConvertConfig(), **kw)
    assert (out / "meta.json").read_text() == before
    convert([a], out, ConvertConfig(), overwrite=True)  # released: free again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_full_disk_is_one_line_and_leaves_nothing(make_bag, tmp_path) -> None:
    # RLIMIT_FSIZE makes every write past 64 KB fail as a full disk would (EFBIG, not ENOSPC).
    a, _ = make_bag("a", n=60)
    out = tmp_path / "ds"
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "from lompo_core.cli import main\n"
        f"sys.exit(main(['convert', {str(a)!r}, '--out', {str(out)!r}, '--quiet']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "File too large" in done.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
