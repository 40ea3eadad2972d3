"""The node's message path in the sim: images and commands as CDR bytes, the nodes' logic."""

import json

import numpy as np

from lompo_core.sim.evaluate import evaluate, wilson_interval


def test_expert_through_the_message_path_closes_the_drawer(tmp_path):
    # The expert closes the drawer on 10/10 seeds when it drives the sim directly (tests/sim);
    # through the messages it must do the same, so the twist <-> action mapping and the success
    # detection on the wire are right.
    report = evaluate(
        None,
        episodes=4,
        seed=1000,
        out=tmp_path,
        video=True,
        video_episodes=1,
        image_size=128,
        progress=False,
    )
    assert report.success_rate == 1.0
    assert all(78 <= r.first_success_step <= 90 for r in report.per_episode)
    assert [r.seed for r in report.per_episode] == [1000, 1001, 1002, 1003]
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["success_rate"] == 1.0 and saved["episodes"] == 4
    assert (tmp_path / "rollout.gif").stat().st_size > 10_000


def test_wilson_interval():
    lo, hi = wilson_interval(8, 10)
    assert 0.44 < lo < 0.5 and 0.94 < hi < 0.97
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert np.allclose(wilson_interval(50, 100), (0.404, 0.596), atol=1e-3)


def test_eval_cli_renders_at_the_training_camera_size_by_default():
    import argparse

    from lompo_core.sim import cli_eval

    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    # None lets evaluate() take the size from the sidecar; a fixed default (it was 64) silently
    # fed a policy trained on 128 px crops upscaled 64 px crops.
    assert parser.parse_args(["policy/"]).image_size is None
