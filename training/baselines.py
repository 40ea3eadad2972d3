"""LOMPO against its baselines on the same data: every method, dataset and training seed.

    python training/baselines.py [--work runs/baselines] [--datasets mixed explore]
        [--seeds 11 12 13] [--methods lompo lambda0 no_rollouts bc filtered_bc] [--report-only]

Per dataset (200 episodes on data seeds 0-199, `lompo collect --policy NAME`, converted with
training/convert_drawer.yaml) and training seed: the `lompo` run trains both phases; every other
method branches from its model-phase checkpoint (training/ablate.py's `branch`), so methods that
share a world model train it once per seed. Each run's policy is exported by its own rule
(`agent.select`: offline for the latent actor-critics, the last checkpoint for behaviour
cloning), never by the simulator, and only then evaluated on fresh seeds (5000-5049).

Resumable: a stage whose output exists is skipped (bags, dataset, a finished run, policy.json,
eval.json), `lompo train` resumes itself. Each method's run is claimed (a lock beside it) while a
process trains and evaluates it, and a run another process holds is skipped: a second process on
the same dataset (`--methods filtered_bc bc no_rollouts`, once the `lompo` run's model phase is
saved) takes the methods the first has not reached, so the two cores stay busy to the end. After
each evaluation it adds the policy's record to docs/results/baselines.json (under a lock: one
process per dataset may run at once), redraws docs/results/baselines.png and rewrites the table
in docs/results.md (between its markers; the rest of the page is left as written). Each stage's wall time is kept in the run folder
(``stage_s.json``), so ``--report-only`` rebuilds every record from the run folders.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ablate import branch, model_end, saved_overrides

from lompo_core.config import ALGOS, Config
from lompo_core.errors import LompoError
from lompo_core.files import atomic_write_bytes, exclusive

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOMPO = [sys.executable, "-m", "lompo_core.cli"]
DATASETS = {"mixed": "mixed", "explore": "explore"}  # dataset name -> lompo collect --policy
TABLE_START, TABLE_END = (
    "<!-- baselines table: written by training/baselines.py -->",
    "<!-- end -->",
)


def _stage(name: str, times: dict[str, float], cmd: list[str]) -> None:
    t0 = time.time()
    print(f"== {name}: {' '.join(cmd[2:])}", flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"baselines: {name} failed (its error is above); run again to resume")
    times[name] = round(time.time() - t0, 1)
    print(f"== {name} done in {times[name]:.0f} s", flush=True)


def _dataset(work: Path, name: str, args: argparse.Namespace, times: dict[str, float]) -> Path:
    bags, data = work / name / "bags", work / name / "dataset"
    if not (bags.is_dir() and any(bags.iterdir())):
        _stage(f"collect {name}", times, [*LOMPO, "collect", "--policy", DATASETS[name],
               "--episodes", str(args.episodes), "--seed", "0", "--image-size", "128",
               "--out", str(bags), "--quiet", "--overwrite"])  # fmt: skip
    if not (data / "meta.json").is_file():
        _stage(f"convert {name}", times, [*LOMPO, "convert", str(bags), "--out", str(data),
               "--config", str(HERE / "convert_drawer.yaml")])  # fmt: skip
    return data


def _finished(run: Path) -> bool:
    """Whether the run's metrics reach its last agent update (a resumed finished run does
    nothing, and must not replace the training's recorded time with its few seconds)."""
    try:
        steps = Config.load(run / "config.yaml").agent.steps
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    except (OSError, ValueError, IndexError, LompoError):
        return False
    return int(last.get("agent_step", -1)) >= steps


def training_seconds(run: Path, with_model: bool = True) -> float:
    """The training's own clock summed over its processes: ``wall_s`` in metrics.jsonl restarts
    with each process, so a run interrupted and resumed is timed whole (less the updates after
    its last checkpoint, which the resume dropped and did again). ``with_model=False``: the
    policy phase alone (a branch's model-phase lines are its base's, copied)."""
    total, last = 0.0, 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        d = json.loads(line)
        wall = float(d.get("wall_s", 0.0))
        if with_model or d.get("phase") != "model":
            total += wall - last if wall >= last else wall  # wall < last: a new process
        last = wall
    return round(total, 1)


@contextlib.contextmanager
def claim(run: Path) -> Iterator[bool]:
    """True while this process holds ``run`` (trains and evaluates it), False if another does."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive(run.parent / f"{run.name}.baselines", "baselines"))
        except LompoError:
            yield False
            return
        yield True


def _train(
    run: Path,
    data: Path,
    preset: str,
    keys: list[str],
    times: dict[str, float],
    what: str,
    with_model: bool,
) -> None:
    if _finished(run):
        return
    if (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file():
        keys = saved_overrides(run)
    train = [*LOMPO, "train", "--dataset", str(data), "--run", str(run), "--preset", preset]
    name = f"train {what}"
    _stage(name, times, [*train, *keys, "log.progress=false"])
    times[name] = training_seconds(run, with_model)  # the stage timer sees the last process only


def _evaluate(run: Path, args: argparse.Namespace, times: dict[str, float], what: str) -> None:
    policy, ev = run / "policy", run / "eval"
    if not (policy / "policy.json").is_file():
        _stage(f"export {what}", times, [*LOMPO, "export", str(run), "--out", str(policy)])
    if not (ev / "eval.json").is_file():
        _stage(f"eval {what}", times, [*LOMPO, "eval", str(policy), "--episodes",
               str(args.eval_episodes), "--seed", str(args.eval_seed), "--image-size", "128",
               "--out", str(ev), "--quiet"])  # fmt: skip


def _stage_times(run: Path, times: dict[str, float]) -> dict[str, float]:
    """This run's stage times so far, merged with those measured now (kept in the run folder)."""
    path = run / "stage_s.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    merged = old | times
    if merged != old and run.is_dir():
        atomic_write_bytes(path, json.dumps(merged, indent=1).encode())
    return merged


def _record(run: Path, method: str, dataset: str, seed: int, times: dict[str, float]) -> dict:
    res = json.loads((run / "eval" / "eval.json").read_text())
    training = json.loads((run / "policy" / "policy.json").read_text())["training"]
    return {
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "episodes": res["episodes"],
        "eval_seed": res["seed"],
        "success_rate": res["success_rate"],
        "ci95": res["success_ci95"],
        "steps_to_success": res["steps_to_success_mean"],
        "selection": training["selection"].split(":")[0],
        "selection_rule": training["selection"],
        "agent_step": training["step"],
        "stage_s": _stage_times(run, times),
    }


def collect_records(work: Path) -> list[dict]:
    """Every evaluated policy under ``work`` (DATASET/seedN/METHOD with eval/eval.json)."""
    records = []
    for ev in sorted(work.glob("*/seed*/*/eval/eval.json")):
        run = ev.parent.parent
        dataset, seed, method = run.parent.parent.name, int(run.parent.name[4:]), run.name
        if method in ALGOS and (run / "policy" / "policy.json").is_file():
            records.append(_record(run, method, dataset, seed, {}))
    order = {m: i for i, m in enumerate(ALGOS)}
    return sorted(records, key=lambda r: (r["dataset"], order[r["method"]], r["seed"]))


def save(records: list[dict], results: Path, page: Path, work: Path) -> None:
    """The JSON, the chart and the table in ``page``, from ``records``."""
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(results / "baselines.json", (json.dumps(records, indent=1) + "\n").encode())
    plot(records, results / "baselines.png")
    text = page.read_text() if page.is_file() else f"# Results\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"baselines: {page} has no table markers ({TABLE_START} ... {TABLE_END})")
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    datasets = [_stage_times(work / name, {}) for name in sorted({r["dataset"] for r in records})]
    hours = (sum(sum(r["stage_s"].values()) for r in records)
             + sum(sum(d.values()) for d in datasets)) / 3600  # fmt: skip
    body = (f"{table(summarise(records))}\n\n{len(records)} policies, each evaluated on "
            f"{', '.join(sorted({str(r['episodes']) for r in records}))} episodes from seed "
            f"{', '.join(sorted({str(r['eval_seed']) for r in records}))}; stages timed so far: "
            f"{hours:.1f} h (wall, one thread per process).")  # fmt: skip
    atomic_write_bytes(page, f"{head}{TABLE_START}\n{body}\n{TABLE_END}{tail}".encode())


def summarise(records: list[dict]) -> list[dict]:
    """Per method and dataset: mean success over seeds, its spread and the pooled interval."""
    from lompo_core.sim.evaluate import wilson_interval

    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        for method in dict.fromkeys(r["method"] for r in records):
            rs = [r for r in records if r["dataset"] == dataset and r["method"] == method]
            if not rs:
                continue
            rates = np.array([r["success_rate"] for r in rs])
            ok = sum(round(r["success_rate"] * r["episodes"]) for r in rs)
            n = sum(r["episodes"] for r in rs)
            rows.append({
                "dataset": dataset, "method": method, "seeds": len(rs),
                "mean": float(rates.mean()), "min": float(rates.min()), "max": float(rates.max()),
                "pooled_ci95": wilson_interval(ok, n),
            })  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    out = ["| dataset | method | seeds | success (mean) | per seed min-max | pooled 95% CI |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lo, hi = r["pooled_ci95"]
        out.append(f"| {r['dataset']} | {r['method']} | {r['seeds']} | {r['mean']:.0%} | "
                   f"{r['min']:.0%}-{r['max']:.0%} | {lo:.0%}-{hi:.0%} |")  # fmt: skip
    return "\n".join(out)


def plot(records: list[dict], path: Path) -> None:
    """A grouped bar chart (cv2, like the other figures): mean success per method and dataset,
    the pooled 95% interval as a whisker, each seed as a dot."""
    import cv2

    rows = summarise(records)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    w, h, m = 900, 400, 60
    img = np.full((h, w, 3), 255, np.uint8)
    colours = [(180, 110, 30), (40, 130, 230), (60, 160, 60)]  # BGR

    def y_px(y: float) -> int:
        return int(h - m - (h - 2 * m) * y)

    for y in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
        cv2.line(img, (m, y_px(y)), (w - 20, y_px(y)), (225, 225, 225), 1)
        cv2.putText(img, f"{y:.0%}", (8, y_px(y) + 4), 0, 0.4, (0, 0, 0), 1)
    group = (w - 20 - m) / max(len(methods), 1)
    bar = 0.8 * group / max(len(datasets), 1)
    for i, method in enumerate(methods):
        cv2.putText(img, method, (int(m + i * group + 0.2 * group), h - m + 20), 0, 0.45,
                    (0, 0, 0), 1)  # fmt: skip
        for j, dataset in enumerate(datasets):
            r = next((r for r in rows if r["dataset"] == dataset and r["method"] == method), None)
            if r is None:
                continue
            x0 = int(m + i * group + 0.1 * group + j * bar)
            c = colours[j % len(colours)]
            cv2.rectangle(img, (x0, y_px(r["mean"])), (int(x0 + bar) - 2, y_px(0)), c, -1)
            xc = int(x0 + bar / 2)
            lo, hi = r["pooled_ci95"]
            cv2.line(img, (xc, y_px(lo)), (xc, y_px(hi)), (0, 0, 0), 1)
            for s in records:
                if s["dataset"] == dataset and s["method"] == method:
                    cv2.circle(img, (xc, y_px(s["success_rate"])), 3, (0, 0, 0), -1)
    for j, dataset in enumerate(datasets):
        c = colours[j % len(colours)]
        cv2.rectangle(img, (w - 170, 40 + 20 * j), (w - 156, 52 + 20 * j), c, -1)
        cv2.putText(img, f"{dataset} data", (w - 150, 51 + 20 * j), 0, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "drawer close, fresh test seeds: mean over training seeds (bar), each seed "
                "(dot), pooled 95% CI (line)", (m, 30), 0, 0.45, (0, 0, 0), 1)  # fmt: skip
    ok, png = cv2.imencode(".png", img)
    if ok:
        atomic_write_bytes(path, png.tobytes())


def _model_saved(base: Path) -> bool:
    """Whether the lompo run's model-phase end checkpoint, what the branches start from, exists."""
    return (base / "config.yaml").is_file() and model_end(base).is_file()


def _method(
    run: Path,
    method: str,
    dataset: str,
    seed: int,
    data: Path,
    keys: list[str],
    args: argparse.Namespace,
    page: Path,
) -> None:
    """Train (or branch and train), export and evaluate one method's run; add its record."""
    times: dict[str, float] = {}
    what = f"{dataset} seed {seed} {method}"
    own = method == "lompo"
    if not own:
        branch(run.parent / "lompo", run, [f"algo={method}"])
    _train(run, data, args.preset, keys if own else [], times, what, own)
    if method not in args.methods:
        return  # the base was trained for the branches only
    _evaluate(run, args, times, what)
    record = _record(run, method, dataset, seed, times)
    print(json.dumps(record), flush=True)
    with exclusive(args.results / "baselines.json", "training/baselines.py", wait=True):
        save(collect_records(args.work), args.results, page, args.work)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work",
        type=Path,
        default=Path("runs/baselines"),
        help="bags, datasets, runs (default: %(default)s)",
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        choices=list(DATASETS),
        help="default: all; one process per dataset on two cores",
    )
    # Training seeds no design choice was made on (seed 1's runs chose the BC early stop).
    p.add_argument("--seeds", nargs="+", type=int, default=[11, 12, 13], help="training seeds")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(ALGOS),
        choices=list(ALGOS),
        help="default: all, in this order (lompo first: the others branch from it)",
    )
    p.add_argument("--episodes", type=int, default=200, help="dataset episodes (data seeds 0-N)")
    p.add_argument("--eval-episodes", type=int, default=50, help="sim test episodes per policy")
    p.add_argument("--eval-seed", type=int, default=5000, help="first test seed (fresh: 5000 up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--preset", default="cpu", help="lompo train preset (debug: a smoke run)")
    p.add_argument(
        "--results",
        type=Path,
        default=ROOT / "docs" / "results",
        help="baselines.json and the chart",
    )
    p.add_argument("--report-only", action="store_true", help="rewrite the table and chart")
    args = p.parse_args()
    page = args.results.parent / "results.md"
    if not args.report_only:
        for name in args.datasets:
            times: dict[str, float] = {}
            data = _dataset(args.work, name, args, times)
            _stage_times(args.work / name, times)  # collect and convert, once per dataset
            for seed in args.seeds:
                base = args.work / name / f"seed{seed}" / "lompo"
                keys = ["algo=lompo", f"seed={seed}", f"threads={args.threads}",
                        "log.keep_checkpoints=100"]  # fmt: skip
                # The others branch from the lompo run's model phase: it is trained first,
                # unless that phase is saved and lompo itself was not asked for.
                needs_base = "lompo" in args.methods or not _model_saved(base)
                for method in ["lompo"] * needs_base + [m for m in args.methods if m != "lompo"]:
                    run = base.parent / method
                    what = f"{name} seed {seed} {method}"
                    with claim(run) as mine:
                        if not mine and method == "lompo" and not _model_saved(base):
                            print(f"== {what}: another process is training its model phase; "
                                  "this seed's other methods are left to a later run", flush=True)  # fmt: skip
                            break
                        if not mine:
                            print(f"== {what}: another process has it, skipped", flush=True)
                            continue
                        _method(run, method, name, seed, data, keys, args, page)
    records = collect_records(args.work)
    if args.report_only:
        save(records, args.results, page, args.work)
    print(table(summarise(records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
