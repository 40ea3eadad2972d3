"""Two CPU processes under DistributedDataParallel (gloo) stay in lockstep on the debug preset."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, dataset: str, run: str, out: str) -> None:
    os.environ |= {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    from lompo_core.agent.trainer import Trainer
    from lompo_core.config import resolve

    cfg = resolve("debug", ["world.steps=12", "agent.steps=12"])
    t = Trainer(dataset, run, cfg, log=lambda m: None)
    t.run()  # also checks, with all_gather, that the ranks agree
    torch.save(
        {"params": t.params_for_check(), "train_idx": t.train_idx}, Path(out) / f"rank{rank}.pt"
    )


def test_two_gloo_ranks_keep_identical_parameters(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    mp.spawn(
        _worker,
        args=(2, _free_port(), str(tiny_dataset), str(run), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert set(r0["train_idx"]).isdisjoint(r1["train_idx"])  # episodes are sharded
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    # The training moved the weights (the check above is not comparing two fresh inits).
    from lompo_core.agent.trainer import Trainer
    from lompo_core.config import resolve

    fresh = Trainer(tiny_dataset, tmp_path / "fresh", resolve("debug"), log=lambda m: None)
    moved = [k for k, v in fresh.params_for_check().items() if not torch.equal(v, r0["params"][k])]
    assert len(moved) > 10
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "ckpt-00000024.pt" in ckpts and "ckpt-00000024.rank1.pt" in ckpts
