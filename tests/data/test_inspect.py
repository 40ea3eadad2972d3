"""lompo inspect on a bag and on a dataset (text summary and contact sheet)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from lompo_core import cli
from lompo_core import messages as m
from lompo_core.data.convert import convert
from lompo_core.data.convert_config import ConvertConfig
from lompo_core.data.inspect import inspect_bag


def test_inspect_bag_reports_topics_rates_and_gaps(make_bag, capsys) -> None:
    bag, spec = make_bag(storage="rosbag1", n=30, skip_images=(10, 11, 12, 13, 14, 15))
    summary = inspect_bag(bag)
    topics = {t.name: t for t in summary.topics}
    image = topics[m.IMAGE_TOPIC]
    assert image.count == 24 and image.msgtype == m.IMAGE_TYPE
    assert abs(image.rate_hz - 10.0) < 1e-6
    assert len(image.gaps) == 1 and abs(image.gaps[0][1] - 0.7) < 1e-6
    assert topics[m.COMMAND_TOPIC].count == 29 and not topics[m.COMMAND_TOPIC].gaps
    assert abs(summary.duration_s - 2.9) < 0.01 and summary.format == "rosbag1"
    assert cli.main(["inspect", str(bag)]) == 0
    out = capsys.readouterr().out
    assert m.COMMAND_TOPIC in out and "geometry_msgs/msg/TwistStamped" in out and "0.700 s" in out


def test_inspect_bag_shows_how_far_stamps_run_from_log_times(make_bag, capsys) -> None:
    bag, _ = make_bag(image_clock_s=0.75, command_stamp="image")
    topics = {t.name: t for t in inspect_bag(bag).topics}
    assert topics[m.IMAGE_TOPIC].stamp_offset_s == pytest.approx(0.75)
    # Commands stamped with their image's time, logged dt/4 later.
    assert topics[m.COMMAND_TOPIC].stamp_offset_s == pytest.approx(-0.025)
    assert topics[m.REWARD_TOPIC].stamp_offset_s is None  # Float32: no header
    assert cli.main(["inspect", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "stamp-log" in out and "+750.0 ms" in out and "-25.0 ms" in out


def test_inspect_dataset_summary_histograms_and_sheet(make_bag, tmp_path: Path, capsys) -> None:
    a, _ = make_bag("a", reward="both", success_at=8, n=12)
    b, _ = make_bag("b", storage="sqlite3", n=15)
    convert([a, b], tmp_path / "ds", ConvertConfig())
    sheet = tmp_path / "sheet.png"
    assert cli.main(["inspect", str(tmp_path / "ds"), "--out", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "episodes  3, 27 steps at 10.0 Hz; length min 3 / mean 9.0 / max 15" in out
    assert "success   1/3 (33%)" in out and "histogram of linear.z" in out
    img = cv2.imread(str(sheet))
    assert img.shape == (3 * 66, 8 * 66, 3)  # a: success at 8, then the rest; b
    assert cli.main(["inspect", str(tmp_path / "ds")]) == 0  # default: beside the dataset
    assert (tmp_path / "ds_frames.png").is_file()
    assert cli.main(["inspect", str(tmp_path)]) == 1
    assert "neither a dataset" in capsys.readouterr().err
