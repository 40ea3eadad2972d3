"""The shipped policy, served exactly as policy_node serves it, closes the drawer."""

import json

from lompo_core.sim.evaluate import evaluate

EVAL_SEED = 2000  # never used for its training data (lompo collect seeds 0..199)


def test_shipped_policy_closes_the_drawer(shipped_policy, tmp_path):
    sidecar = json.loads((shipped_policy / "policy.json").read_text())
    assert sidecar["dataset"]["camera"]["width"] == 128
    report = evaluate(shipped_policy, episodes=20, seed=EVAL_SEED, out=tmp_path, progress=False)
    print(report.summary())
    # Measured 55% on these seeds (54% over seeds 1000-1049): below issue 7's 70%, which this
    # policy does not reach yet. The bound leaves three episodes of margin for float differences
    # between machines; a broken serving path scores near 0%.
    assert report.success_rate >= 0.4, report.summary()
    # The node's path: every step through decode, crop, resize, ONNX and the controller.
    assert report.step_latency_ms_p50 < 20
    assert report.sidecar["dataset_hash"] == sidecar["dataset"]["hash"]


def test_shipped_policy_is_small_and_documented(shipped_policy):
    sidecar = json.loads((shipped_policy / "policy.json").read_text())
    size = sum(f.stat().st_size for f in shipped_policy.iterdir())
    assert size <= 20 * 2**20
    assert sidecar["training"]["config"] and sidecar["dataset"]["hash"]
    assert sidecar["code_version"]["git_commit"]
    assert (shipped_policy / "eval.json").is_file(), "the shipped policy's 50-episode report"
