"""training/uncertainty_profile.py: u of a run's own training transitions, by time to success."""

from __future__ import annotations

import numpy as np

from lompo_core.agent.select import holdout_split
from lompo_core.cli import main as cli_main
from lompo_core.data.dataset import EpisodeDataset


def test_profile_scores_every_training_transition_and_counts_back_from_the_end(
    tiny_dataset, tmp_path, training_script
):
    run = tmp_path / "run"
    assert cli_main(["train", "--dataset", str(tiny_dataset), "--run", str(run), "--preset",
                     "debug", "agent.steps=10", "log.keep_checkpoints=100"]) == 0  # fmt: skip
    script = training_script("uncertainty_profile")
    ds = EpisodeDataset(tiny_dataset)
    p = script.profile(run, ds)
    _, train = holdout_split(len(ds), 0.2, 0)  # the debug preset's holdout and seed
    lengths = [int(ds.lengths[i]) - 1 for i in train]
    assert len(p["u"]) == sum(lengths) and bool(np.isfinite(p["u"]).all())
    # Counted back from each episode's end: k steps before it, one transition per longer episode.
    for k in range(max(lengths)):
        assert int((p["to_end"] == k).sum()) == sum(n > k for n in lengths)
    succeeded = [n for n, i in zip(lengths, train, strict=True) if ds.episodes[i].success]
    assert int(p["success"].sum()) == sum(succeeded) > 0
    rows = script.rows(p)
    assert rows[-1][0] == "failed episodes" and rows[-1][2] == int((~p["success"]).sum())
    assert all(0.0 <= s <= 1.0 for _, share, _ in rows for s in share.values())
    script.plot({"tiny": p}, tmp_path / "profile.png")
    assert (tmp_path / "profile.png").stat().st_size > 0
