"""Where in the data the ensemble disagrees: u on the dataset's own transitions, by time to success.

    python training/uncertainty_profile.py RUN [RUN ...] --dataset D [--plot PNG]

For each run, its world model at the end of the model phase encodes the run's training episodes
(posterior means, as the policy phase's real buffer) and scores every logged transition with
the rollouts' own step (``rollout.data_uncertainty``). The table gives, by steps before the
success in successful episodes, and for the failed episodes, the share of transitions whose u
lies above the data's median, p90 and p99: the share that ``agent.penalty_offset`` =
``data_median``, ``data_p90`` or ``data_p99`` charges although the dataset itself holds them.
The plot draws the share above the median against steps before success, one line per run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lompo_core.agent import checkpoint
from lompo_core.agent.rollout import data_quantile, data_uncertainty, encode_episodes
from lompo_core.agent.select import holdout_split
from lompo_core.config import PENALTY_QUANTILES, Config
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.model.world_model import WorldModel

BINS = [(0, 5), (5, 15), (15, 30), (30, 60), (60, 10**6)]  # steps before the success


def profile(run: Path, dataset: EpisodeDataset) -> dict[str, np.ndarray]:
    """u of every training transition of ``run``'s model-phase world model, with its episode's
    success and its steps to the episode's end."""
    cfg = Config.load(run / "config.yaml")
    state = checkpoint.load(
        checkpoint.checkpoint_dir(run) / checkpoint.name_for(cfg.world.steps), torch.device("cpu")
    )
    wm = WorldModel(cfg.model, dataset.action_dim)
    wm.load_state_dict(state["world_model"])
    wm.eval()
    _, train = holdout_split(len(dataset), cfg.data.holdout, cfg.seed)
    buf = encode_episodes(wm, dataset, train, cfg.agent.encode_chunk, torch.device("cpu"))
    u = data_uncertainty(wm, buf, cfg.agent.penalty).numpy()
    first = np.flatnonzero(buf.data["first"][: len(buf)].numpy() > 0.5)
    ends = [*first[1:], len(u)]
    to_end = np.concatenate([np.arange(e - s)[::-1] for s, e in zip(first, ends, strict=True)])
    return {"u": u, "success": buf.data["success"][: len(buf)].numpy() > 0.5, "to_end": to_end}


def rows(p: dict[str, np.ndarray]) -> list[tuple[str, dict[str, float], int]]:
    """(group, share of its transitions above each quantile of all u, count) per table row."""
    u, success, to_end = p["u"], p["success"], p["to_end"]
    cut = {k: data_quantile(torch.from_numpy(u), k) for k in PENALTY_QUANTILES}
    groups = [(f"success in {lo}-{hi}" if hi < 10**6 else f"success in {lo}+",
               success & (to_end >= lo) & (to_end < hi)) for lo, hi in BINS]  # fmt: skip
    groups.append(("failed episodes", ~success))
    return [(g, {k: float(np.mean(u[m] > c)) for k, c in cut.items()}, int(m.sum()))
            for g, m in groups if m.any()]  # fmt: skip


def plot(profiles: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import cv2

    w, h, m, x_max = 720, 380, 50, 60
    img = np.full((h, w, 3), 255, np.uint8)

    def xy(x: float, y: float) -> tuple[int, int]:
        return int(w - m - (w - 2 * m) * x / x_max), int(h - m - (h - 2 * m) * y)

    cv2.rectangle(img, xy(x_max, 0), xy(0, 1), (0, 0, 0), 1)
    for y in (0.25, 0.5, 0.75):
        cv2.line(img, xy(x_max, y), xy(0, y), (220, 220, 220), 1)
        cv2.putText(img, f"{y:.0%}", (8, xy(0, y)[1] + 4), 0, 0.4, (0, 0, 0), 1)
    for x in (0, 15, 30, 45, 60):
        cv2.putText(img, str(x), (xy(x, 0)[0] - 6, h - m + 16), 0, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "steps before the success (successful episodes)", (w // 2 - 180, h - 12),
                0, 0.45, (0, 0, 0), 1)  # fmt: skip
    cv2.putText(img, "share of the data's own transitions with u above its median", (m, 30),
                0, 0.5, (0, 0, 0), 1)  # fmt: skip
    colours = [(200, 80, 30), (30, 140, 30), (30, 30, 200), (150, 40, 150), (0, 140, 200),
               (120, 120, 0)]  # fmt: skip
    for i, (name, p) in enumerate(profiles.items()):
        c = colours[i % len(colours)]
        median = data_quantile(torch.from_numpy(p["u"]), "data_median")
        pts = []
        for x in range(2, x_max - 1):  # a 5-step window around each x, where there are any
            near = p["success"] & (np.abs(p["to_end"] - x) <= 2)
            if near.any():
                pts.append(xy(x, float(np.mean(p["u"][near] > median))))
        if len(pts) < 2:
            continue
        cv2.polylines(img, [np.array(pts, np.int32)], False, c, 2)
        cv2.putText(img, name, (m + 10, m + 18 * (i + 1)), 0, 0.45, c, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="lompo train run folders")
    p.add_argument("--dataset", type=Path, action="append", required=True,
                   help="the runs' dataset (once, or once per run)")  # fmt: skip
    p.add_argument("--plot", type=Path, help="PNG of the share above the median")
    args = p.parse_args()
    if len(args.dataset) not in (1, len(args.runs)):
        p.error("give --dataset once, or once per run")
    datasets = args.dataset * len(args.runs) if len(args.dataset) == 1 else args.dataset
    torch.set_num_threads(1)
    profiles = {}
    for run, data in zip(args.runs, datasets, strict=True):
        name = "/".join(run.parts[-3:-1]) if run.name == "lompo" else run.name
        profiles[name] = profile(run, EpisodeDataset(data))
        median = data_quantile(torch.from_numpy(profiles[name]["u"]), "data_median")
        print(f"\n{name}: u median {median:.3f}\n")
        print("| transitions | count | > median | > p90 | > p99 |\n|---|---|---|---|---|")
        for group, share, count in rows(profiles[name]):
            cells = " | ".join(f"{share[k]:.0%}" for k in PENALTY_QUANTILES)
            print(f"| {group} | {count} | {cells} |", flush=True)
    if args.plot:
        plot(profiles, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
