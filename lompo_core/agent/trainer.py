"""The LOMPO trainer: the model phase, then the latent policy phase, resumable at any checkpoint.

A checkpoint holds everything the continuation depends on (weights, optimiser moments, step
counters, every random stream, the sampler and both latent buffers), so a resumed run reproduces
the uninterrupted one bit for bit on the same machine and thread count.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lompo_core.agent import checkpoint, distributed
from lompo_core.agent.figures import prediction_rows, save_figure
from lompo_core.agent.replay import LatentBuffer, SequenceSampler, cat_batches, to_torch
from lompo_core.agent.rollout import (
    encode_dataset,
    encode_episodes,
    model_rollouts,
    penalty_offset,
    rest_states,
    transitions,
)
from lompo_core.agent.sac import SAC, speed_limit
from lompo_core.agent.select import (
    CHECK_KEYS,
    heldout_signals,
    holdout_split,
    open_loop_success,
    world_model_warning,
)
from lompo_core.config import LOWER_IS_BETTER, Config, differences, resolve
from lompo_core.data.dataset import (
    EpisodeDataset,
    atomic_write_bytes,
    content_hash,
    file_sha256,
)
from lompo_core.errors import DatasetError, LompoError
from lompo_core.model.world_model import WorldModel

CONFIG_FILE, DATASET_FILE, METRICS_FILE = "config.yaml", "dataset.json", "metrics.jsonl"
# Posterior steps a frame is held still for to make a rest start (agent.rest_starts).
REST_STEPS = 8


def _start_file(name: str) -> bool:
    """A file a run's first moments write: the dataset record, or an atomic write's temporary."""
    return name == DATASET_FILE or (name.startswith(".") and name.endswith(".tmp"))


def resolve_device(name: str, info: distributed.DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and info.enabled:
        name = f"cuda:{info.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LompoError(f"config: device={name!r} but CUDA is not available here")
    return device


def dataset_record(ds: EpisodeDataset) -> dict[str, Any]:
    """What export needs from the dataset without reading it again."""
    h = ds.hash or content_hash([file_sha256(ds.root / e.file) for e in ds.episodes])
    return {
        "path": str(ds.root.resolve()),
        "hash": h,
        "preprocessing": ds.preprocessing,
        "action": ds.meta["action"],
        "episodes": len(ds),
        "steps": ds.total_steps,
    }


class _Mean:
    """Running means of metric tensors, read (one sync) only when a line is logged."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v.detach() if k in self.sums else v.detach().clone()
        self.n += 1

    def pop(self) -> dict[str, float]:
        out = {k: float(v) / max(self.n, 1) for k, v in self.sums.items()}
        self.sums, self.n = {}, 0
        return out


class Trainer:
    def __init__(
        self,
        dataset: str | Path,
        run: str | Path,
        cfg: Config,
        dist_info: distributed.DistInfo | None = None,
        log=print,
    ) -> None:
        self.cfg = cfg
        self.dist = dist_info or distributed.from_env()
        self._print = log
        self.device = resolve_device(cfg.device, self.dist)
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
        self._owns_group = distributed.init(self.dist, self.device)
        self.dataset = EpisodeDataset(dataset)
        if cfg.data.validate:
            # One episode in memory at a time; a malformed or changed file is named now, not
            # mid-training.
            for i in range(len(self.dataset)):
                self.dataset.load(i, verify=True)
        self.run_dir = Path(run)
        self.dataset_info = dataset_record(self.dataset)
        self._prepare_run_dir()

        self.holdout, train = holdout_split(len(self.dataset), cfg.data.holdout, cfg.seed)
        r, w = self.dist.rank, self.dist.world
        self.train_idx = train[r::w]
        # The policy trains on the training episodes too: the held-out ones feed the offline
        # selection signal, which must read episodes nothing was fitted to.
        self.encode_idx = train[r::w]
        if cfg.agent.successful_only:  # filtered BC: the policy reads the successes alone
            self.encode_idx = [i for i in self.encode_idx if self.dataset.episodes[i].success]
        if not self.train_idx or not self.encode_idx:
            what = "successful training" if self.train_idx else "training"
            raise DatasetError(
                f"{self.dataset.root}: no {what} episode for rank {r} of {w} "
                f"({len(train)} training episodes); every rank needs at least one"
            )

        # Same initial weights on every rank; per-rank streams are seeded after construction.
        torch.manual_seed(cfg.seed)
        a_dim = self.dataset.action_dim
        self.wm = WorldModel(cfg.model, a_dim).to(self.device)
        speed = speed_limit(cfg.agent, self.dataset.meta["action"])
        self.sac = SAC(cfg.agent, self.wm.feat_dim, a_dim, speed).to(self.device)
        self.model_opt = torch.optim.Adam(self.wm.parameters(), lr=cfg.world.lr, eps=cfg.world.eps)
        self.agent_opt = self.sac.make_optimizers()
        self.wm_fwd = distributed.wrap(self.wm, self.dist, self.device)
        if self.dist.enabled:
            self.sac.wrap(
                lambda m: distributed.wrap(m, self.dist, self.device),
                lambda g: distributed.allreduce_mean(g, self.dist),
            )
        torch.manual_seed(cfg.seed + 7919 * (r + 1))
        self.sampler = SequenceSampler(
            self.dataset,
            self.train_idx,
            cfg.world.length,
            [cfg.seed, r],
            cfg.data.cache_episodes,
            still_fraction=cfg.world.still_fraction,
        )
        # The prior head of each step is shared by all ranks, as in one big batch.
        self.head_rng = np.random.default_rng([cfg.seed, 1_000_003])
        self.phase = "model"
        self.model_step = 0
        self.agent_step = 0
        self.real: LatentBuffer | None = None
        self._u_offset: float | None = None
        self._rest: torch.Tensor | None = None
        self.best_eval = -1.0  # eval success of checkpoints/best.pt (-1: none yet)
        # The score of checkpoints/offline.pt: its select_metric, negated where lower is better.
        self.best_offline = -float("inf")
        # The held-out open-loop Brier of checkpoints/model.pt (world.select=heldout), and the
        # model update the policy phase's world model comes from.
        self.best_model = float("inf")
        self.world_model_step = 0
        # The held-out check (select.open_loop_success) of the world model the policy phase
        # learns in: the latest model checkpoint's, or model.pt's with world.select=heldout.
        self.world_model_check: dict[str, float] = {}
        # The uniform average of the acting actor's weights over the agent checkpoints of the
        # last third so far (checkpoints/average.pt), and how many it holds.
        self.actor_average: dict[str, torch.Tensor] | None = None
        self.average_count = 0
        self._heldout: LatentBuffer | None = None
        self.model_buf: LatentBuffer | None = None
        self._writer = None
        self._t0 = time.time()

    # ----------------------------------------------------------------- run folder and logging

    def log(self, msg: str) -> None:
        if self.dist.main:
            self._print(msg)

    def _prepare_run_dir(self) -> None:
        run, cfg_path = self.run_dir, self.run_dir / CONFIG_FILE
        if self.dist.main:
            if cfg_path.is_file():
                saved = Config.load(cfg_path)
                diff = differences(saved, self.cfg)
                if diff:
                    raise LompoError(
                        f"{run}: this run was started with another config ("
                        + "; ".join(diff)
                        + "). Resume with the same preset and overrides, or use a new --run."
                    )
                ds_path = run / DATASET_FILE
                old = json.loads(ds_path.read_text()) if ds_path.is_file() else {}
                if old.get("hash") != self.dataset_info["hash"]:
                    raise LompoError(
                        f"{run}: this run was trained on dataset {old.get('path')!r} (hash "
                        f"{str(old.get('hash'))[:12]}), not {self.dataset.root} (hash "
                        f"{self.dataset_info['hash'][:12]}); use a new --run"
                    )
            # A folder holding only the dataset record is a start killed before its config
            # was written (the config goes last): start it again.
            elif run.exists() and (
                not run.is_dir() or any(not _start_file(p.name) for p in run.iterdir())
            ):
                raise LompoError(
                    f"{run}: exists and is not a lompo run folder (no {CONFIG_FILE}); "
                    "refusing to write into it"
                )
            else:
                run.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(
                    run / DATASET_FILE, json.dumps(self.dataset_info, indent=2).encode()
                )
                atomic_write_bytes(cfg_path, self.cfg.to_yaml().encode())
        distributed.barrier(self.dist)

    @property
    def global_step(self) -> int:
        return self.model_step + self.agent_step

    def _write_metrics(self, phase: str, metrics: dict[str, float]) -> None:
        if not self.dist.main:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        step = self.global_step
        line = {"phase": phase, "step": step, "model_step": self.model_step}
        line |= {"agent_step": self.agent_step, "wall_s": round(time.time() - self._t0, 2)}
        line |= metrics
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(line) + "\n")
        for k, v in metrics.items():
            self._writer.add_scalar(k, v, step)
        self._writer.flush()

    def _truncate_metrics(self) -> None:
        """Drop lines an interrupted run logged after its last checkpoint: they are redone."""
        path = self.run_dir / METRICS_FILE
        if not self.dist.main or not path.is_file():
            return
        lines = path.read_text().splitlines()
        keep = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= self.global_step]
        if len(keep) != len(lines):
            atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode())

    # ----------------------------------------------------------------------------- checkpoints

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "sampler": self.sampler.state_dict(),
        }
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        state["real"] = self.real.state_dict() if self.real is not None else None
        state["model_buf"] = self.model_buf.state_dict() if self.model_buf is not None else None
        return state

    def save(self) -> Path:
        name = checkpoint.name_for(self.global_step)
        main_path = checkpoint.checkpoint_dir(self.run_dir) / name
        local = self._rng_state()
        if self.dist.rank > 0:
            checkpoint.write(checkpoint.local_path(main_path, self.dist.rank), local)
        distributed.barrier(self.dist)
        if self.dist.main:
            state = self._policy_state() | {
                "world_size": self.dist.world,
                "model_opt": self.model_opt.state_dict(),
                "agent_opt": {k: o.state_dict() for k, o in self.agent_opt.items()},
                "head_rng": json.dumps(self.head_rng.bit_generator.state),
                "actor_average": self.actor_average,
                "average_count": self.average_count,
                "local": local,
            }
            checkpoint.save(self.run_dir, name, state, self.cfg.log.keep_checkpoints)
        distributed.barrier(self.dist)
        return main_path

    def _resume(self) -> bool:
        path = checkpoint.last_path(self.run_dir)
        if path is None:
            return False
        state = checkpoint.load(path, self.device)
        if state.get("world_size", 1) != self.dist.world:
            raise LompoError(
                f"{path}: written by {state.get('world_size')} process(es), resumed with "
                f"{self.dist.world}; resume with the same number"
            )
        local = state["local"]
        if self.dist.rank > 0:
            local = checkpoint.load(checkpoint.local_path(path, self.dist.rank), self.device)
        self.wm.load_state_dict(state["world_model"])
        self.model_opt.load_state_dict(state["model_opt"])
        self.sac.load_state_dict(state["sac"])
        for k, o in self.agent_opt.items():
            o.load_state_dict(state["agent_opt"][k])
        self.head_rng.bit_generator.state = json.loads(state["head_rng"])
        # best.pt holds its own score, also when written after the last checkpoint.
        best = checkpoint.checkpoint_dir(self.run_dir) / checkpoint.BEST
        if best.is_file():
            self.best_eval = float(checkpoint.load(best)["best_eval"])
        offline = checkpoint.checkpoint_dir(self.run_dir) / checkpoint.OFFLINE
        if offline.is_file():
            self.best_offline = float(checkpoint.load(offline)["select_score"])
        model = checkpoint.checkpoint_dir(self.run_dir) / checkpoint.MODEL
        if model.is_file():
            self.best_model = float(checkpoint.load(model)["select_score"])
        self.world_model_step = int(state.get("world_model_step", state["model_step"]))
        self.world_model_check = dict(state.get("world_model_check") or {})
        self.actor_average = state.get("actor_average")
        self.average_count = int(state.get("average_count", 0))
        self.phase = state["phase"]
        self.model_step, self.agent_step = int(state["model_step"]), int(state["agent_step"])
        torch.set_rng_state(local["torch"].cpu())
        if "cuda" in local:
            torch.cuda.set_rng_state(local["cuda"].cpu(), self.device)
        self.sampler.load_state_dict(local["sampler"])
        if local["real"] is not None:
            self.real = self._new_buffer(len(local["real"]["feat"]), local["real"])
        if local["model_buf"] is not None:
            self.model_buf = self._new_buffer(len(local["model_buf"]["feat"]), local["model_buf"])
        c = self.cfg
        self.log(
            f"resuming {self.run_dir} from {path.name}: model {self.model_step}/{c.world.steps}, "
            f"agent {self.agent_step}/{c.agent.steps} updates"
        )
        return True

    def _new_buffer(self, size: int, state: dict[str, Any] | None = None) -> LatentBuffer:
        cap = self.cfg.agent.buffer_capacity or self._local_transitions()
        buf = LatentBuffer(
            max(cap, size, 1), self.wm.feat_dim, self.dataset.action_dim, self.device
        )
        if state is not None:
            buf.load_state_dict(state)
        return buf

    def _local_transitions(self) -> int:
        return transitions(self.dataset, self.encode_idx)

    # ------------------------------------------------------------------------------- training

    def run(self, stop_at: int | None = None) -> Path:
        """Train to the end (or, for tests, stop before update ``stop_at`` with no checkpoint)."""
        ok = True  # False after an exception: then no final barrier, which could hang
        try:
            resumed = self._resume()
            # Lines an interrupted run logged after its last checkpoint (or before its first)
            # are logged again: drop them, and the temporary files of a checkpoint cut short.
            self._truncate_metrics()
            if self.dist.main:
                checkpoint.remove_partial(self.run_dir)
            if resumed and self.phase == "done":
                self.log(f"{self.run_dir}: run is finished; nothing to do")
                return self.run_dir
            if self.phase == "model" and not self._model_phase(stop_at):
                return self.run_dir
            if not self._agent_phase(stop_at):
                return self.run_dir
            self.phase = "done"
            path = self.save()
            self._check_ranks_agree()
            self.log(f"finished: {self.run_dir} (last checkpoint {path.name})")
            return self.run_dir
        except BaseException:
            ok = False
            raise
        finally:
            if self._writer is not None:
                self._writer.close()
            if self._owns_group:
                if ok:  # no rank tears the group down while another still talks to it
                    distributed.barrier(self.dist)
                torch.distributed.destroy_process_group()

    def _bar(self, total: int, initial: int, desc: str):
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=not (self.cfg.log.progress and self.dist.main),
            dynamic_ncols=True,
        )

    def _model_phase(self, stop_at: int | None) -> bool:
        c = self.cfg
        mean, t_last = _Mean(), time.time()
        with self._bar(c.world.steps, self.model_step, "model") as bar:
            while self.model_step < c.world.steps:
                if stop_at is not None and self.global_step >= stop_at:
                    return False
                batch = to_torch(self.sampler.sample(c.world.batch), self.device)
                heads = self.head_rng.integers(c.model.heads, size=c.world.length).tolist()
                self.wm.train()
                loss, metrics = self.wm_fwd(batch, heads)
                self.model_opt.zero_grad(set_to_none=True)
                loss.backward()
                metrics["model/grad_norm"] = nn.utils.clip_grad_norm_(
                    self.wm.parameters(), c.world.grad_clip
                )
                self.model_opt.step()
                self.model_step += 1
                mean.add(metrics)
                bar.update(1)
                done = self.model_step == c.world.steps
                if self.model_step % c.log.every == 0 or done:
                    m = mean.pop()
                    dt = max(time.time() - t_last, 1e-9)
                    n = c.log.every if not done else max(self.model_step % c.log.every, 1)
                    m["speed/model_updates_per_s"] = n / dt
                    m["speed/frames_per_s"] = (
                        n * c.world.batch * c.world.length * self.dist.world / dt
                    )
                    t_last = time.time()
                    bar.set_postfix(loss=f"{m['model/loss']:.1f}", kl=f"{m['model/kl']:.2f}")
                    self._write_metrics("model", m)
                if self.model_step % c.log.model_checkpoint_every == 0 or done:
                    self.world_model_step = self.model_step
                    if self.dist.main:
                        self._keep_model(self._figure_and_heldout())
                    self.save()
        return True

    def _figure_batch(self) -> dict[str, torch.Tensor]:
        c = self.cfg.log
        # Held-out episodes first; training ones fill up when the dataset is too small for them.
        pool = self.holdout + [i for i in self.train_idx if i not in self.holdout]
        items = [self.sampler.window(i, 0, c.figure_length) for i in pool[: c.figure_sequences]]
        batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
        return to_torch(batch, self.device)

    @torch.no_grad()
    def _figure_and_heldout(self) -> dict[str, float]:
        # Its own random stream: a checkpoint's figure must not change what training draws next.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            self.wm.eval()
            batch = self._figure_batch()
            heads = [t % self.cfg.model.heads for t in range(batch["image"].shape[1])]
            loss, m = self.wm(batch, heads)
            rows = prediction_rows(self.wm, batch, self.cfg.log.figure_context)
            save_figure(
                self.run_dir / "figures" / f"model-{self.model_step:08d}.png",
                rows,
                self.cfg.log.figure_context,
            )
            metrics = {"heldout/" + k.split("/", 1)[1]: float(v) for k, v in m.items()}
            if self.holdout:
                w = self.cfg.world
                metrics |= open_loop_success(
                    self.wm,
                    self.dataset,
                    self.holdout,
                    w.check_stride,
                    w.check_samples,
                    self.cfg.agent.encode_chunk,
                    self.cfg.agent.penalty,
                )
            self.wm.train()
        self._write_metrics("model", metrics)
        self.world_model_check = {
            k.removeprefix("heldout/"): v for k, v in metrics.items() if k in CHECK_KEYS
        }
        return metrics

    def _keep_model(self, metrics: dict[str, float]) -> None:
        """With world.select=heldout, keep the world model as checkpoints/model.pt when its
        held-out open-loop Brier is the lowest so far (the earliest of equals)."""
        score = metrics.get("heldout/open_loop_brier")
        if self.cfg.world.select != "heldout" or score is None or score >= self.best_model:
            return
        self.best_model = score
        state = {
            "world_model": self.wm.state_dict(),
            "model_step": self.model_step,
            "select_score": score,
            "world_model_check": self.world_model_check,
        }
        checkpoint.write(checkpoint.checkpoint_dir(self.run_dir) / checkpoint.MODEL, state)

    def _load_kept_model(self) -> None:
        """The policy phase's world model: checkpoints/model.pt where world.select=heldout kept
        one (every rank reads the same file), else the model phase's end."""
        path = checkpoint.checkpoint_dir(self.run_dir) / checkpoint.MODEL
        if self.cfg.world.select != "heldout" or not path.is_file():
            return
        state = checkpoint.load(path, self.device)
        self.wm.load_state_dict(state["world_model"])
        self.world_model_step = int(state["model_step"])
        self.world_model_check = dict(state.get("world_model_check") or {})
        self.log(
            f"world model: the checkpoint after {self.world_model_step} updates, the lowest "
            f"held-out open-loop Brier ({float(state['select_score']):.3f})"
        )

    def _start_agent(self) -> None:
        c = self.cfg.agent
        t0 = time.time()
        self._load_kept_model()
        if warning := world_model_warning(self.world_model_check):
            self.log(warning)
        self.wm.eval()
        self.real = self._new_buffer(0)
        n = encode_dataset(
            self.wm, self.dataset, self.encode_idx, self.real, c.encode_chunk, self.device
        )
        self.log(f"encoded {n} dataset transitions with the posterior ({time.time() - t0:.0f} s)")
        if c.refit_end_steps:
            self._refit_end()
        if c.rollouts and c.real_fraction < 1.0:
            self.model_buf = self._new_buffer(0)
            want = min(c.model_buffer_min, self.model_buf.capacity)
            while len(self.model_buf) < want:
                self._rollout_batch()
            self.log(f"model buffer: {len(self.model_buf)} penalised rollout transitions")
        self.phase = "agent"

    def _refit_end(self) -> None:
        """Refit the continuation head on the real buffer (the training episodes' posterior
        means); the agent checkpoints carry the refitted head in the world model's weights."""
        t0, real = time.time(), self.real.data
        n = len(self.real)
        m = self.wm.refit_cont(
            real["next_feat"][:n],
            real["terminal"][:n],
            self.cfg.agent.refit_end_steps,
            self.cfg.seed,
        )
        self._write_metrics("agent", m)
        self.log(
            f"continuation head refitted on {n} posterior-mean transitions: reads "
            f"{m['refit/ends_read']:.0%} of their ends, {m['refit/false_ends']:.2%} of the rest "
            f"as ends ({time.time() - t0:.0f} s)"
        )

    def _penalty_offset(self) -> float:
        c = self.cfg.agent
        if c.penalty_offset == "none":
            return 0.0
        if self._u_offset is None:
            self._u_offset = penalty_offset(self.wm, self.real, c)
            self.log(
                f"penalty offset u0 = {self._u_offset:.4g} "
                f"({c.penalty_offset} of u on {len(self.real)} dataset transitions)"
            )
        return self._u_offset

    def _rest_starts(self, n: int) -> torch.Tensor:
        """``n`` start states drawn from the training frames at rest (``rest_states``), which are
        computed once from the world model the policy phase learns in."""
        if self._rest is None:
            t0 = time.time()
            self._rest = rest_states(
                self.wm,
                self.dataset,
                self.encode_idx,
                REST_STEPS,
                self.cfg.agent.encode_chunk,
                self.device,
            )
            self.log(f"{len(self._rest)} dataset frames at rest ({time.time() - t0:.0f} s)")
        return self._rest[torch.randint(len(self._rest), (n,), device=self.device)]

    def _rollout_batch(self) -> dict[str, float]:
        c = self.cfg.agent
        n_rest = int(round(c.rollout_batch * c.rest_starts))
        starts = self.real.sample(c.rollout_batch - n_rest)["feat"]
        if n_rest:
            starts = torch.cat([starts, self._rest_starts(n_rest)])
        u_offset = self._penalty_offset()
        return model_rollouts(
            self.wm,
            self.sac.actor,
            starts,
            c.horizon,
            c.lmbda,
            c.penalty,
            self.model_buf,
            u_offset=u_offset,
            reward_clip=c.reward_clip,
            success_ends=c.success_ends,
            success_reward=c.success_reward,
            end_threshold=c.success_threshold,
        ) | {"rollout/u_offset": u_offset}

    def _agent_phase(self, stop_at: int | None) -> bool:
        c = self.cfg.agent
        if self.real is None:
            self._start_agent()
        n_real = c.batch if self.model_buf is None else int(round(c.batch * c.real_fraction))
        mean, t_last, roll = _Mean(), time.time(), {}
        with self._bar(c.steps, self.agent_step, "agent") as bar:
            while self.agent_step < c.steps:
                if stop_at is not None and self.global_step >= stop_at:
                    return False
                # At step 0 the buffer has just been filled.
                roll_due = self.agent_step % c.rollout_every == 0 and self.agent_step > 0
                if self.model_buf is not None and roll_due:
                    roll = self._rollout_batch()
                batch = self.real.sample(n_real)
                if self.model_buf is not None:
                    batch = cat_batches(batch, self.model_buf.sample(c.batch - n_real))
                if c.actor_lr_decay:
                    lr = self.sac.actor_lr(self.agent_step)
                    self.agent_opt["actor"].param_groups[0]["lr"] = lr
                metrics = self.sac.update(batch, self.agent_opt, n_real, self.agent_step + 1)
                if c.actor_lr_decay:
                    metrics["agent/actor_lr"] = torch.tensor(lr)
                self.agent_step += 1
                mean.add(metrics)
                bar.update(1)
                done = self.agent_step == c.steps
                if self.agent_step % self.cfg.log.every == 0 or done:
                    m = mean.pop() | roll
                    n = (
                        self.cfg.log.every
                        if not done
                        else max(self.agent_step % self.cfg.log.every, 1)
                    )
                    m["speed/agent_updates_per_s"] = n / max(time.time() - t_last, 1e-9)
                    t_last = time.time()
                    if "agent/q" in m:
                        bar.set_postfix(q=f"{m['agent/q']:.2f}", alpha=f"{m['agent/alpha']:.3f}")
                    else:  # behaviour cloning
                        bar.set_postfix(bc_mse=f"{m['agent/bc_mse']:.3f}")
                    self._write_metrics("agent", m)
                ev = self.cfg.eval.every
                if ev and self.dist.main and (self.agent_step % ev == 0 or done):
                    m = self._evaluate()
                    self._write_metrics("agent", m)
                    if self.cfg.eval.keep_best and m["eval/success"] > self.best_eval:
                        self.best_eval = m["eval/success"]
                        self._save_best()
                if self.agent_step % self.cfg.log.agent_checkpoint_every == 0 or done:
                    self._average()
                    if self.dist.main:
                        self._offline_selection()
                    if not done:
                        self.save()
        return True

    def _policy_state(self) -> dict[str, Any]:
        """The part of a checkpoint that load_policy_step (export) reads."""
        return {
            "phase": self.phase,
            "model_step": self.model_step,
            "agent_step": self.agent_step,
            "world_model_step": self.world_model_step,
            "world_model_check": self.world_model_check,
            "world_model": self.wm.state_dict(),
            "sac": self.sac.state_dict(),
            "config": self.cfg.to_dict(),
        }

    def _offline_selection(self) -> None:
        """Log the held-out signals of the current policy; keep it as checkpoints/offline.pt
        when its ``agent.select_metric`` is the best so far (the earliest of equals)."""
        c = self.cfg.agent
        if not self.holdout:
            return
        if self._heldout is None:
            self._heldout = encode_episodes(
                self.wm, self.dataset, self.holdout, c.encode_chunk, self.device
            )
        m = heldout_signals(self.wm, self.sac, self._heldout, c, self._penalty_offset())
        self._write_metrics("agent", m)
        score = m[f"offline/{c.select_metric}"]
        if c.select_metric in LOWER_IS_BETTER:
            score = -score
        if score > self.best_offline:
            self.best_offline = score
            state = self._policy_state() | {"select_score": score}
            checkpoint.write(checkpoint.checkpoint_dir(self.run_dir) / checkpoint.OFFLINE, state)

    @torch.no_grad()
    def _average(self) -> None:
        """From two thirds of the policy phase on, fold the acting actor into the uniform average
        of the agent checkpoints so far; keep the policy with that actor as checkpoints/average.pt.
        """
        c = self.cfg.agent
        if 3 * self.agent_step < 2 * c.steps:
            return
        weights = self.sac.acting_actor.state_dict()
        if self.actor_average is None:
            self.actor_average = {k: torch.zeros_like(v) for k, v in weights.items()}
        self.average_count += 1
        for k, v in weights.items():
            self.actor_average[k].lerp_(v, 1.0 / self.average_count)
        if self.dist.main:
            prefix = SAC.acting_prefix(c)
            state = self._policy_state()
            state["sac"] |= {prefix + k: v for k, v in self.actor_average.items()}
            state["average_count"] = self.average_count
            checkpoint.write(checkpoint.checkpoint_dir(self.run_dir) / checkpoint.AVERAGE, state)

    def _save_best(self) -> None:
        """The policy alone, as checkpoints/best.pt (main rank only: no barrier)."""
        state = self._policy_state() | {"best_eval": self.best_eval}
        checkpoint.write(checkpoint.checkpoint_dir(self.run_dir) / checkpoint.BEST, state)
        self.log(
            f"best eval so far: {self.best_eval:.0%} at agent update {self.agent_step} "
            f"-> {checkpoint.CHECKPOINTS}/{checkpoint.BEST}"
        )

    def _evaluate(self) -> dict[str, float]:
        from lompo_core.agent.evaluate import evaluate_in_sim
        from lompo_core.model.policy_step import PolicyStep

        e = self.cfg.eval
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            step = PolicyStep(self.wm, self.sac.acting_actor, self.cfg.agent.penalty).eval()
            size = e.image_size or (self.dataset.camera or {}).get("width", 64)
            res = evaluate_in_sim(
                step, self.dataset.preprocessing, e.episodes, e.seed, e.max_steps, size
            )
        return {"eval/success": res["success_rate"], "eval/steps": res["mean_steps"]}

    def _check_ranks_agree(self) -> None:
        """Under DDP every rank must end with the same weights; a mismatch is a bug, not noise."""
        if not self.dist.enabled:
            return
        flat = torch.cat([p.detach().flatten() for p in self.params_for_check().values()])
        gathered = [torch.empty_like(flat) for _ in range(self.dist.world)]
        torch.distributed.all_gather(gathered, flat)
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            raise RuntimeError("DDP ranks ended with different parameters")

    def params_for_check(self) -> dict[str, torch.Tensor]:
        out = {f"wm.{k}": v for k, v in self.wm.state_dict().items()}
        return out | {f"sac.{k}": v for k, v in self.sac.state_dict().items()}


def train(
    dataset: str | Path,
    run: str | Path,
    preset: str = "cpu",
    overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Train (or resume, or report finished) the run at ``run``; return the run folder."""
    cfg = resolve(preset, overrides)
    return Trainer(dataset, run, cfg).run()
