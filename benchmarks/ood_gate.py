"""The out-of-distribution gate per camera shift, in the sim, through ``lompo eval``'s code path.

For an exported policy: one clean run (in distribution) and one run per shift of
``lompo_core.sim.shifts`` on the same seeds, each shift starting at ``--onset``. Prints a markdown
table: per shift the AUROC of each image signal and of the gate's score (the larger of each
signal over its threshold), shifted frames against the clean run's frames; the frames from the
onset to the first hold (median and max over episodes, and how many never held); the success
rate. For the clean run: the fraction of steps held (false holds) and the success rate.

    python benchmarks/ood_gate.py POLICY --seed 5000 --episodes 50 --shift-episodes 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")


GATE_OFF = {
    "surprise_threshold": float("inf"),
    "reconstruction_threshold": float("inf"),
    "reconstruction_patch_threshold": float("inf"),
    "frozen_patience": 0,
}


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney U)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not (pos.size and neg.size):
        return float("nan")
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    i = 0
    while i < values.size:  # average ranks over ties
        j = i
        while j + 1 < values.size and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def scores(frames: list[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, np.ndarray]:
    out = {name: np.array([f[name] for f in frames], np.float64) for name in thresholds}
    out["gate"] = np.max([out[n] / t for n, t in thresholds.items()], axis=0)
    return out


def main(argv: list[str] | None = None) -> int:
    from lompo_core.sim.evaluate import evaluate
    from lompo_core.sim.shifts import SHIFTS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("policy", type=Path)
    p.add_argument("--seed", type=int, default=5000)
    p.add_argument("--episodes", type=int, default=50, help="clean episodes")
    p.add_argument("--shift-episodes", type=int, default=20, help="episodes per shift")
    p.add_argument("--onset", type=int, default=10)
    p.add_argument("--shifts", nargs="*", default=list(SHIFTS), choices=SHIFTS)
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)

    clean = evaluate(args.policy, args.episodes, args.seed, progress=False)
    # The same seeds with the gate off: what "success unchanged" compares against.
    ungated = evaluate(args.policy, args.episodes, args.seed, progress=False, node_params=GATE_OFF)
    thresholds = clean.ood["thresholds"]
    if not thresholds:
        print(f"{args.policy}: the policy has no image signals (no gate)", file=sys.stderr)
        return 1
    clean_scores = scores(clean.ood["frames"], thresholds)
    names = [*thresholds, "gate"]
    rows = {
        "in distribution": {
            "episodes": clean.episodes,
            "success": clean.success_rate,
            "success_without_gate": ungated.success_rate,
            "successes": [r.success for r in clean.per_episode],
            "successes_without_gate": [r.success for r in ungated.per_episode],
            "false_hold_fraction": clean.ood["ood_hold_fraction"],
            "false_hold_steps": clean.ood["ood_hold_steps"],
            "episodes_with_false_holds": len(
                {f["episode"] for f in clean.ood["frames"] if f["ood_hold"]}
            ),
            "steps": clean.ood["steps"],
        }
    }
    for shift in args.shifts:
        report = evaluate(
            args.policy,
            args.shift_episodes,
            args.seed,
            progress=False,
            shift=shift,
            shift_onset=args.onset,
        )
        shifted = [f for f in report.ood["frames"] if f["shifted"]]
        s = scores(shifted, thresholds)
        held = [k for k in report.ood["frames_to_hold"] if k is not None]
        rows[shift] = {
            "episodes": report.episodes,
            "success": report.success_rate,
            "auroc": {n: auroc(s[n], clean_scores[n]) for n in names},
            "frames_to_hold": report.ood["frames_to_hold"],
            "frames_to_hold_median": float(np.median(held)) if held else None,
            "frames_to_hold_max": max(held) if held else None,
            "never_held": len(report.ood["frames_to_hold"]) - len(held),
            "held_fraction_after_onset": float(np.mean([f["ood_hold"] for f in shifted])),
        }
        print(f"{shift}: done", file=sys.stderr)

    print(
        f"policy {args.policy}, seeds {args.seed}-{args.seed + args.episodes - 1} (clean), "
        f"{args.seed}-{args.seed + args.shift_episodes - 1} (shifts, onset step {args.onset}); "
        f"thresholds {json.dumps(thresholds)}\n"
    )
    head = " | ".join(f"AUROC {n}" for n in names)
    print(f"| shift | {head} | frames to first hold: median, max (never) | held after onset "
          "| success |")  # fmt: skip
    print("|---" * (len(names) + 4) + "|")
    for shift, row in rows.items():
        if shift == "in distribution":
            continue
        aucs = " | ".join(f"{row['auroc'][n]:.3f}" for n in names)
        first = (
            f"{row['frames_to_hold_median']:.0f}, {row['frames_to_hold_max']} ({row['never_held']})"
            if row["frames_to_hold_median"] is not None
            else f"never ({row['never_held']})"
        )
        print(
            f"| {shift} | {aucs} | {first} | {row['held_fraction_after_onset']:.0%} "
            f"| {row['success']:.0%} |"
        )
    c = rows["in distribution"]
    print(
        f"\nin distribution: false holds {c['false_hold_fraction']:.2%} of {c['steps']} steps "
        f"({c['false_hold_steps']} steps in {c['episodes_with_false_holds']} episodes), "
        f"success {c['success']:.0%} over {c['episodes']} episodes "
        f"({c['success_without_gate']:.0%} on the same seeds with the gate off)"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"thresholds": thresholds, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
