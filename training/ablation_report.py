"""The table and plot of `training/ablate.py` results: per-checkpoint sim success beside the
held-out signals, and each signal's Spearman rank correlation with success.

    python training/ablation_report.py RUN [RUN ...] [--plot docs/figures/ablation.png]

Prints markdown: one table per run, each signal's correlation with success, and what each rule
would export (the last checkpoint, or the best by one signal) with its success. The plot draws
success (solid) and one signal (``--signal``, rescaled to the run's own range, dashed) against
agent updates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SIGNALS = ("model_success", "model_return", "model_value", "q", "bc_mse", "uncertainty")
RULES = ("model_success", "model_return")  # signals compared as export rules (highest wins)
COLOURS = [(200, 80, 30), (40, 140, 40), (30, 60, 200), (150, 40, 150), (20, 150, 170)]


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    fa, fb = np.asarray(a, float), np.asarray(b, float)
    if not (np.isfinite(fa).all() and np.isfinite(fb).all()):
        return float("nan")
    ra, rb = ranks(fa), ranks(fb)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def load(run: Path) -> list[dict]:
    path = run / "ablation.jsonl"
    if not path.is_file():
        raise SystemExit(
            f"{path}: missing (training/ablate.py writes it once it has scored the run)"
        )
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln]


def plot(runs: dict[str, list[dict]], path: Path, signal: str) -> None:
    import cv2

    w, h, m = 900, 420, 50
    img = np.full((h, w, 3), 255, np.uint8)
    steps = [r["agent_step"] for rows in runs.values() for r in rows]
    x_max = max(steps)

    def xy(step: float, y: float) -> tuple[int, int]:
        return int(m + (w - 2 * m) * step / x_max), int(h - m - (h - 2 * m) * y)

    cv2.rectangle(img, xy(0, 0), xy(x_max, 1), (0, 0, 0), 1)
    for y in (0.25, 0.5, 0.75, 0.9):
        cv2.line(img, xy(0, y), xy(x_max, y), (220, 220, 220), 1)
        cv2.putText(img, f"{y:.0%}", (5, xy(0, y)[1] + 4), 0, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "agent updates", (w // 2 - 40, h - 12), 0, 0.45, (0, 0, 0), 1)
    cv2.putText(img, f"{x_max}", (xy(x_max, 0)[0] - 20, h - m + 16), 0, 0.4, (0, 0, 0), 1)
    for i, (name, rows) in enumerate(runs.items()):
        c = COLOURS[i % len(COLOURS)]
        s = [r["agent_step"] for r in rows]
        pts = np.array([xy(a, r["success"]) for a, r in zip(s, rows, strict=True)], np.int32)
        cv2.polylines(img, [pts], False, c, 2)
        sig = np.array([r.get(f"offline/{signal}", np.nan) for r in rows], float)
        if np.isfinite(sig).all() and np.ptp(sig) > 0:
            sig = (sig - sig.min()) / np.ptp(sig)
            for a, b, ya, yb in zip(s[:-1], s[1:], sig[:-1], sig[1:], strict=True):
                p0, p1 = np.array(xy(a, ya)), np.array(xy(b, yb))
                for t in np.arange(0, 1, 0.2):  # dashes
                    q0, q1 = p0 + (p1 - p0) * t, p0 + (p1 - p0) * (t + 0.1)
                    cv2.line(img, tuple(q0.astype(int)), tuple(q1.astype(int)), c, 1)
        cv2.putText(img, name, (m + 10, m + 18 * (i + 1)), 0, 0.5, c, 1)
    cv2.putText(img, f"success (solid), offline/{signal} rescaled (dashed)", (m, 30), 0, 0.5,
                (0, 0, 0), 1)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--plot", type=Path)
    p.add_argument("--signal", default="model_success", choices=SIGNALS, help="drawn dashed")
    args = p.parse_args()
    names = [r.name for r in args.runs]
    if len(set(names)) < len(names):  # e.g. runs/baselines/*/seed*/lompo
        names = ["/".join(r.parts[-3:]) for r in args.runs]
    runs = {n: load(r) for n, r in zip(names, args.runs, strict=True)}
    cols = ["success", *(f"offline/{s}" for s in SIGNALS)]
    for name, rows in runs.items():
        print(f"\n{name}\n\n| agent updates | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for r in rows:
            vals = [f"{r['success']:.0%}"] + [f"{r.get(c, float('nan')):.3f}" for c in cols[1:]]
            print(f"| {r['agent_step']} | " + " | ".join(vals) + " |")
    print("\n| run | " + " | ".join(SIGNALS) + " |\n" + "|---" * (len(SIGNALS) + 1) + "|")
    for name, rows in runs.items():
        succ = [r["success"] for r in rows]
        rho = [spearman([r.get(f"offline/{s}", np.nan) for r in rows], succ) for s in SIGNALS]
        print(f"| {name} | " + " | ".join(f"{x:+.2f}" for x in rho) + " |")
    heads = ["last", *(f"best {s}" for s in RULES), "best in the sim (hindsight)"]
    print("\nSuccess of what each rule exports (agent updates in brackets):\n")
    print("| run | " + " | ".join(heads) + " |\n" + "|---" * (len(heads) + 1) + "|")
    for name, rows in runs.items():
        picks = [rows[-1]]
        for s in RULES:  # the earliest of equals, as training keeps it
            picks.append(
                max(rows, key=lambda r: (r.get(f"offline/{s}", -np.inf), -r["agent_step"]))
            )
        picks.append(max(rows, key=lambda r: (r["success"], -r["agent_step"])))
        cells = [f"{r['success']:.0%} ({r['agent_step']})" for r in picks]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.plot:
        plot(runs, args.plot, args.signal)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
