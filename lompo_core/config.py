"""Training configuration: typed dataclasses, named presets from ``presets.yaml``, overrides.

The dataclass defaults are the reference implementation's values (research-lompo.md); a preset
changes only what differs from them, and ``key=value`` overrides (dotted keys, YAML values) come
last. The resolved config is what a run saves in its folder and what a resume compares against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lompo_core.errors import LompoError

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
SELECT_METRICS = ("model_return", "model_value", "model_success", "q", "bc_mse")
# agent.penalty_offset -> the quantile of the dataset's own u that the penalty starts above
PENALTY_QUANTILES = {"data_median": 0.5, "data_p90": 0.9, "data_p99": 0.99}
LOWER_IS_BETTER = ("bc_mse",)  # held-out signals where the smaller value is the better policy
LEARNERS = ("sac", "bc")

_BC = (
    "agent.learner=bc", "agent.rollouts=false", "agent.actor_ema=0.999", "agent.select=offline",
    "agent.select_metric=bc_mse",
)  # fmt: skip
# The methods `lompo train --algo NAME` (or `algo=NAME`) selects: each is the overrides it
# stands for, applied after the preset and before the user's own. All share the model phase.
ALGOS: dict[str, tuple[str, ...]] = {
    "lompo": (),  # latent SAC on real + uncertainty-penalised model transitions, 1:1
    "lambda0": ("agent.lmbda=0",),  # the same without the uncertainty penalty
    "no_rollouts": ("agent.rollouts=false",),  # latent SAC on dataset transitions only
    # The dataset's actions regressed, the weights averaged, the checkpoint with the lowest
    # held-out action error exported (BC overfits: docs/training.md).
    "bc": _BC,
    "filtered_bc": (*_BC, "agent.successful_only=true"),
}


@dataclass
class ModelConfig:
    depth: int = 32  # conv channels of the first layer; later layers double
    deter: int = 256  # GRU state
    stoch: int = 64  # diagonal Gaussian state
    hidden: int = 256
    heads: int = 7  # K prior heads sharing the GRU
    min_std: float = 0.1
    reward_layers: int = 2
    cont_layers: int = 3
    kl_scale: float = 1.0
    # A sparse reward (1 on the success step) costs a head that predicts 0 everywhere only
    # ~0.5 nats per success frame, beside ~12,000 for the image: weight it like the continuation.
    reward_scale: float = 1.0
    cont_scale: float = 10.0
    # True: the reward and continuation heads learn on the state with its gradient stopped, so
    # that ~100 success frames cannot shape the latent state to memorise them. Trained into the
    # state (False, the reference), held-out failed episodes' own frames read as successes on
    # some seeds (docs/training-measurements.md, "Measured: a success detector that generalises").
    detach_heads: bool = False


@dataclass
class WorldConfig:
    """The model phase: ELBO updates on dataset sequences."""

    steps: int = 25_000
    batch: int = 64
    length: int = 50
    lr: float = 6e-4
    eps: float = 1e-7
    grad_clip: float = 100.0
    # The held-out open-loop check at every model checkpoint (select.open_loop_success): a
    # start every `check_stride` steps of each held-out episode, `check_samples` imaginations.
    check_stride: int = 10
    check_samples: int = 8
    # The world model the policy phase learns in: "last" (the model phase's end, as the
    # reference), or "heldout": the model checkpoint with the lowest held-out open-loop Brier.
    select: str = "last"
    # The fraction of model-phase windows that hold one dataset frame still under zero actions
    # (SequenceSampler.still): a drawer at rest stays at rest. 0 is the reference.
    still_fraction: float = 0.0


@dataclass
class AgentConfig:
    """The policy phase: SAC in latent space on real and penalised model transitions."""

    steps: int = 100_000
    batch: int = 512  # real + model transitions per update
    real_fraction: float = 0.5  # 1:1 mix; 1.0 (or rollouts: false) trains on real data only
    actor_lr: float = 3e-4
    # The share of the policy phase, at its end, over which the actor's learning rate falls
    # linearly to 0 (IQL anneals its actor's, with a cosine): the checkpoints of the last third
    # then differ little, and the actor stops following a critic that keeps climbing late.
    # 0: constant, as in the reference.
    actor_lr_decay: float = 0.0
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 0.1
    target_entropy: float | None = None  # None: -action_dim
    # The critics' target includes SAC's entropy bonus (-alpha log pi at the next state). With a
    # success that ends the episode, that bonus (~alpha * H per step over 1 / (1 - discount)
    # steps) outweighs the reward of 1 until alpha has decayed: false backs up the task's return
    # only (CQL's backup_entropy), and the entropy term stays in the actor's and alpha's losses.
    backup_entropy: bool = True
    discount: float = 0.99
    tau: float = 5e-3
    hidden: int = 256
    actor_layers: int = 4
    critic_layers: int = 3
    grad_clip: float = 100.0
    # uncertainty penalty: "log_prob" (std over heads of log p_k(s')) or "mean" (disagreement)
    penalty: str = "log_prob"
    lmbda: float = 5.0
    # "none": r_hat - lmbda * u, the reference. "data_median": r_hat - lmbda * max(u - u0, 0) with
    # u0 the median u of the dataset's own transitions: only disagreement beyond what the data
    # itself shows is penalised. With a sparse reward (1 on success) the reference's penalty,
    # ~lmbda * 0.3 on every model step even in distribution, drowns the success signal.
    # "data_p90" / "data_p99": u0 the 90th / 99th percentile instead (the data's own last steps
    # before a success can lie above its median: docs/training.md).
    penalty_offset: str = "none"
    rollouts: bool = True  # False: "no model rollouts" baseline
    # "sac"; or "bc": the actor's mode regressed onto the dataset's actions (squared error) on the
    # same posterior features, no critic (the behaviour-cloning baseline; needs rollouts: false).
    learner: str = "sac"
    # The real buffer holds the successful training episodes only (filtered BC); the model phase
    # still reads every training episode.
    successful_only: bool = False
    horizon: int = 5
    rollout_batch: int = 3200  # start states per rollout batch
    # The share of rollout starts that are training frames at rest (rollout.rest_states) instead
    # of the dataset's moving states: where the policy, run on the robot, has stopped. 0: the
    # reference's starts.
    rest_starts: float = 0.0
    # Updates of a refit of the continuation head at the policy phase's start, on the training
    # episodes' posterior means (WorldModel.refit_cont), the states the policy reads; the
    # rollouts' ends, the success reward and the held-out signals then read the refitted head.
    # 0: the model phase's head, as in the reference.
    refit_end_steps: int = 0
    rollout_every: int = 200  # agent updates between two rollout batches
    model_buffer_min: int = 50_000  # model transitions before the first update (capped by capacity)
    buffer_capacity: int = 0  # 0: as many transitions as the dataset holds
    encode_chunk: int = 64  # sequence length the posterior encodes episodes in
    # Behaviour regularisation (TD3+BC / ReBRAC-style, 0 = off as in the reference): the actor
    # loss becomes SAC's divided by mean |Q| plus bc_weight * ||pi(s) - a||^2 on the real half of
    # the batch, which keeps the policy near the data's actions where the critic is unsure.
    bc_weight: float = 0.0
    # The behaviour term reads only the transitions of successful dataset episodes (the real
    # half's others still train the critics): the anchor is the data's good behaviour, not the
    # average of expert, faulty and random actions.
    bc_successful: bool = False
    # Clip r_hat(s') to [0, 1] in model rollouts: the data's reward is a 0/1 success flag, and an
    # unclipped Gaussian head pays a rollout more than one success (or a negative one) by error.
    reward_clip: bool = False
    # An imagined step ends with the probability of success it predicts: r_hat(s') clipped to
    # [0, 1] is both the reward and the step's terminal weight (the critic's target bootstraps
    # with 1 - max(terminal, r_hat)). In the data a success is paid once and ends the episode; a
    # rollout that hovers where r_hat is high but the continuation head says "go on" is paid on
    # every step, and the critic learns values above 1, which no dataset episode has.
    success_ends: bool = False
    # An imagined step pays 1 where the continuation head ends the episode (P(end) > 0.5, a
    # predicted success) and 0 elsewhere, instead of the reward head's r_hat: the data's sparse
    # success, paid once, by the same decision that stops the rollout. A state next to success
    # reads r_hat 0.2-0.4 without ending; paid on every step the actor stays there, it is worth
    # r_hat / (1 - discount), more than closing the drawer, and the actor learns to hover there.
    success_reward: bool = False
    # P(end) above which an imagined step ends in success (rollouts stop there; with
    # success_reward it pays 1 there; the held-out return counts the same). The continuation
    # head reads 0.5-0.6 on a drawer stopped 2-4 cm short of closed; 0.7 did not stop a late
    # actor from stopping there (docs/training-measurements.md, "where a late drop stops the
    # drawer").
    success_threshold: float = 0.5
    # LayerNorm in the critics' hidden layers (ReBRAC): Q cannot grow without bound on latent
    # states and actions far from the data's.
    critic_norm: bool = False
    # How many critics the target and the actor take the minimum over (SAC-N, An et al. 2021):
    # where the imagined data says little, more critics disagree more and the minimum falls, so
    # Q cannot climb there. 2 is SAC's twin critics.
    critics: int = 2
    # Conservative critics (CQL(H), the reference's term, which it computes with weight 0): each
    # critic's loss gains cql_weight * (soft maximum of Q(s, .) over cql_samples uniform actions
    # and the actor's own action, minus Q(s, a) of the logged action), on the real half of the
    # batch. The actions no transition covers are pushed down, the logged ones up, so the target's
    # bootstrap at the actor's action cannot climb where the data says nothing (0 = off). The
    # gap is summed over the critics while their TD error is averaged, so with agent.critics > 2
    # the term weighs more against each critic's TD error.
    cql_weight: float = 0.0
    cql_samples: int = 4  # the reference draws 16; 4 keeps the policy phase's time on two cores
    # The deployment's physical speed limit, inside the actor (0 = off: the whole [-1, 1] box, the
    # reference): m/s on the norm of a linear velocity action, rad/s on each joint of a joint
    # velocity one, as the runtime's controller limits them (its defaults are 0.5 and 1.0). The
    # policy then learns the motion the robot will make: a policy trained in the box and slowed
    # down by the controller meets another dynamics than the one it was trained in.
    max_linear_speed: float = 0.0
    max_joint_speed: float = 0.0
    # Polyak average of the actor's weights (0 = off; e.g. 0.999, a ~1,000-update window): the
    # acting policy (held-out signals, sim evaluation, export) is the average, which smooths the
    # swings between neighbouring checkpoints. Rollouts keep the learning actor.
    actor_ema: float = 0.0
    # The share of the policy phase, at its end, in which the acting actor is the uniform average
    # of the learning actor over the updates of that share so far (SWA, Izmailov et al. 2018), not
    # its Polyak average: every checkpoint there acts with the average since the share began, and
    # a late drift of the learning actor weighs as little as any other stretch of it. Needs
    # actor_ema > 0 (the acting copy). 0: the Polyak average throughout.
    actor_swa: float = 0.0
    # Which checkpoint `lompo export` takes by default: "last"; "offline" (the one with the best
    # held-out signal `select_metric`, kept as checkpoints/offline.pt; signals come from the
    # held-out episodes (data.holdout) alone, at every agent checkpoint); or "average" (the
    # acting actor's weights averaged uniformly over the agent checkpoints of the last third of
    # training, kept as checkpoints/average.pt): neighbouring checkpoints of one run close very
    # different shares of drawers, and their average does not depend on where training stopped.
    select: str = "last"
    # model_return | model_value | model_success | q (higher is better) | bc_mse (lower: the
    # held-out error against the logged actions, behaviour cloning's early stop)
    select_metric: str = "model_return"
    select_horizon: int = 15  # imagined steps from each held-out start state
    select_starts: int = 1024  # held-out start states (evenly spaced over the held-out steps)
    # model_success imagines whole episodes from the held-out episodes' first states: this many
    # steps (0: as many as the longest held-out episode has), this many head draws per start.
    select_success_horizon: int = 0
    select_success_samples: int = 16


@dataclass
class DataConfig:
    holdout: float = 0.05  # fraction of episodes kept out of model training (figures, eval loss)
    cache_episodes: int = 512  # decoded episodes kept in memory by the sequence sampler
    validate: bool = True  # read every episode once before training: a bad file fails early


@dataclass
class LogConfig:
    every: int = 50  # updates between metric lines
    model_checkpoint_every: int = 1000
    agent_checkpoint_every: int = 5000
    keep_checkpoints: int = 3  # older ones are deleted (the last is always kept)
    figure_sequences: int = 4
    figure_length: int = 30
    figure_context: int = 5  # frames filtered by the posterior before the open-loop rollout
    progress: bool = True


@dataclass
class EvalConfig:
    """Optional evaluation in the simulated drawer task during the policy phase: a research
    option, off by default. A robot team has no simulator, so nothing it measures chooses the
    exported policy unless keep_best is set (the sidecar then says ``training.selection: sim``)."""

    every: int = 0  # agent updates between evaluations; 0 = off
    episodes: int = 5
    seed: int = 100_000
    max_steps: int = 150
    image_size: int = 0  # sim camera resolution; 0: the dataset's camera (its crop assumes it)
    # Keep the policy of the best evaluation so far (the earliest of equals) as
    # checkpoints/best.pt, for `lompo export --checkpoint best`.
    keep_best: bool = False


@dataclass
class Config:
    algo: str = "lompo"  # the method (ALGOS): recorded here, expanded by apply_overrides
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch.set_num_threads; 0 = all cores
    model: ModelConfig = field(default_factory=ModelConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def load(cls, path: Path) -> Config:
        """A saved config (a run's ``config.yaml``), validated."""
        from lompo_core.files import read_yaml

        return cls.from_dict(read_yaml(path, "run config"), where=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> Config:
        cfg = cls()
        for key, value in _flatten(d).items():
            _set(cfg, key, value, where)
        validate(cfg)
        return cfg


# Keys that may differ between the first run and a resume: they change speed, not results' meaning.
RUNTIME_KEYS = ("device", "threads", "log.progress")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def all_keys(cfg: Any = None, prefix: str = "") -> list[str]:
    cfg = Config() if cfg is None else cfg
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    if isinstance(value, str) and tp in (int, float):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads "1e3" as a string
            value = float(value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except LompoError:
                pass
        raise LompoError(f"{where}: {key}={value!r} is not a {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise LompoError(f"{where}: {key}={value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e5 is a float in YAML
        raise LompoError(f"{where}: {key}={value!r} must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise LompoError(f"{where}: {key}={value!r} must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise LompoError(f"{where}: {key}={value!r} must be a string")
    raise TypeError(f"unsupported config type {tp} for {key}")


def _set(cfg: Config, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    obj: Any = cfg
    for part in parts[:-1]:
        sub = getattr(obj, part, None)
        if not dataclasses.is_dataclass(sub):
            _unknown(key, where)
        obj = sub
    hints = typing.get_type_hints(type(obj))
    name = parts[-1]
    if name not in hints or dataclasses.is_dataclass(getattr(obj, name)):
        _unknown(key, where)
    setattr(obj, name, _coerce(value, hints[name], key, where))


def _unknown(key: str, where: str) -> typing.NoReturn:
    close = difflib.get_close_matches(key, all_keys(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise LompoError(f"{where}: unknown config key {key!r}{hint}")


def _numbers(cfg: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _numbers(value, f"{prefix}{f.name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{f.name}", value


def validate(cfg: Config) -> None:
    """Refuse, naming the key, a config that cannot train (a NaN, a zero size, a discount of 2)."""
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            raise LompoError(f"config: {key}={value!r} must be a finite number")
    m, w, a, log = cfg.model, cfg.world, cfg.agent, cfg.log
    positive = {
        "model.depth": m.depth, "model.deter": m.deter, "model.stoch": m.stoch,
        "model.hidden": m.hidden, "model.min_std": m.min_std, "model.reward_layers": m.reward_layers,
        "model.cont_layers": m.cont_layers, "world.lr": w.lr, "world.eps": w.eps,
        "world.grad_clip": w.grad_clip, "agent.actor_lr": a.actor_lr, "agent.critic_lr": a.critic_lr,
        "agent.alpha_lr": a.alpha_lr, "agent.init_alpha": a.init_alpha, "agent.tau": a.tau,
        "agent.hidden": a.hidden, "agent.actor_layers": a.actor_layers,
        "agent.critic_layers": a.critic_layers, "agent.grad_clip": a.grad_clip,
        "agent.rollout_batch": a.rollout_batch, "agent.rollout_every": a.rollout_every,
        "agent.encode_chunk": a.encode_chunk, "log.every": log.every,
        "log.model_checkpoint_every": log.model_checkpoint_every,
        "log.agent_checkpoint_every": log.agent_checkpoint_every,
        "log.keep_checkpoints": log.keep_checkpoints,
    }  # fmt: skip
    for key, value in positive.items():
        if not value > 0:
            raise LompoError(f"config: {key}={value!r} must be > 0")
    not_negative = {
        "model.kl_scale": m.kl_scale, "model.reward_scale": m.reward_scale,
        "model.cont_scale": m.cont_scale, "world.steps": w.steps, "agent.steps": a.steps,
        "agent.model_buffer_min": a.model_buffer_min, "agent.buffer_capacity": a.buffer_capacity,
        "data.cache_episodes": cfg.data.cache_episodes, "threads": cfg.threads,
        "agent.max_linear_speed": a.max_linear_speed, "agent.max_joint_speed": a.max_joint_speed,
    }  # fmt: skip
    for key, value in not_negative.items():
        if value < 0:
            raise LompoError(f"config: {key}={value!r} must be >= 0")
    checks = [
        (0.0 < a.discount < 1.0, f"agent.discount={a.discount!r} must be in (0, 1)"),
        (a.tau <= 1.0, f"agent.tau={a.tau!r} must be in (0, 1]"),
        (cfg.model.heads >= 1, "model.heads must be at least 1"),
        (cfg.world.length >= 2, "world.length must be at least 2"),
        (cfg.world.batch >= 1 and cfg.agent.batch >= 2, "batch sizes must be positive"),
        (0.0 < cfg.agent.real_fraction <= 1.0, "agent.real_fraction must be in (0, 1]"),
        (cfg.agent.penalty in ("log_prob", "mean"), "agent.penalty must be log_prob or mean"),
        (cfg.algo in ALGOS, f"algo must be one of {', '.join(ALGOS)}"),
        (cfg.agent.learner in LEARNERS, f"agent.learner must be one of {', '.join(LEARNERS)}"),
        (
            cfg.agent.learner == "sac" or not cfg.agent.rollouts,
            "agent.learner=bc trains on dataset transitions only: set agent.rollouts=false",
        ),
        (
            cfg.agent.penalty_offset in ("none", *PENALTY_QUANTILES),
            f"agent.penalty_offset must be none or one of {', '.join(PENALTY_QUANTILES)}",
        ),
        (cfg.agent.lmbda >= 0.0, "agent.lmbda must be >= 0"),
        (cfg.agent.critics >= 2, "agent.critics must be at least 2"),
        (0.0 < cfg.agent.success_threshold < 1.0, "agent.success_threshold must be in (0, 1)"),
        (cfg.agent.bc_weight >= 0.0, "agent.bc_weight must be >= 0"),
        (0.0 <= cfg.agent.actor_ema < 1.0, "agent.actor_ema must be in [0, 1)"),
        (
            0.0 <= cfg.agent.actor_swa <= 1.0
            and (cfg.agent.actor_swa == 0 or cfg.agent.actor_ema > 0),
            f"agent.actor_swa={cfg.agent.actor_swa!r} must be in [0, 1], and needs agent.actor_ema > 0",
        ),
        (
            cfg.agent.cql_weight >= 0.0 and cfg.agent.cql_samples >= 0,
            "agent.cql_weight and agent.cql_samples must be >= 0",
        ),
        (
            cfg.agent.select in ("last", "offline", "average"),
            "agent.select must be last, offline or average",
        ),
        (
            cfg.agent.select_metric in SELECT_METRICS,
            f"agent.select_metric must be one of {', '.join(SELECT_METRICS)}",
        ),
        (
            cfg.agent.select_horizon >= 1 and cfg.agent.select_starts >= 1,
            "agent.select_horizon and agent.select_starts must be at least 1",
        ),
        (
            cfg.agent.select_success_horizon >= 0 and cfg.agent.select_success_samples >= 1,
            "agent.select_success_horizon must be >= 0 and agent.select_success_samples >= 1",
        ),
        (cfg.agent.horizon >= 1, "agent.horizon must be at least 1"),
        (cfg.world.select in ("last", "heldout"), "world.select must be last or heldout"),
        (
            0.0 <= cfg.agent.rest_starts <= 1.0,
            f"agent.rest_starts={cfg.agent.rest_starts!r} must be in [0, 1]",
        ),
        (
            0.0 <= cfg.agent.actor_lr_decay <= 1.0,
            f"agent.actor_lr_decay={cfg.agent.actor_lr_decay!r} must be in [0, 1]",
        ),
        (
            cfg.agent.refit_end_steps >= 0,
            f"agent.refit_end_steps={cfg.agent.refit_end_steps!r} must be >= 0",
        ),
        (
            0.0 <= cfg.world.still_fraction < 1.0,
            f"world.still_fraction={cfg.world.still_fraction!r} must be in [0, 1)",
        ),
        (
            cfg.world.check_stride >= 1 and cfg.world.check_samples >= 1,
            "world.check_stride and world.check_samples must be at least 1",
        ),
        (0.0 <= cfg.data.holdout < 1.0, "data.holdout must be in [0, 1)"),
        (cfg.log.figure_context < cfg.log.figure_length, "log.figure_context < figure_length"),
    ]
    for ok, msg in checks:
        if not ok:
            raise LompoError(f"config: {msg}")


def load_presets(path: Path = PRESETS_FILE) -> dict[str, dict[str, Any]]:
    from lompo_core.files import read_yaml

    return read_yaml(path, "presets file", empty_ok=False)


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise LompoError(f"override {item!r}: expected key=value, e.g. agent.lmbda=0")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def resolve(preset: str = "cpu", overrides: typing.Iterable[str] = ()) -> Config:
    """The config of ``preset`` with ``key=value`` overrides applied, validated."""
    presets = load_presets()
    if preset not in presets:
        raise LompoError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    cfg = Config.from_dict(presets[preset] or {}, where=f"{PRESETS_FILE.name}:{preset}")
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: typing.Iterable[str]) -> None:
    """Set ``key=value`` overrides on ``cfg``; ``algo=NAME`` first expands to ALGOS[NAME]."""
    items = parse_overrides(overrides)
    algo = items.pop("algo", None)
    if algo is not None:
        if algo not in ALGOS:
            raise LompoError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
        cfg.algo = algo
        for key, value in parse_overrides(ALGOS[algo]).items():
            _set(cfg, key, value, where=f"algo {algo}")
    for key, value in items.items():
        _set(cfg, key, value, where="override")


def differences(a: Config, b: Config, ignore: typing.Iterable[str] = RUNTIME_KEYS) -> list[str]:
    """Keys whose values differ between two configs, as ``key: a -> b`` lines."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    skip = set(ignore)
    return [f"{k}: {fa[k]!r} -> {fb[k]!r}" for k in fa if k not in skip and fa[k] != fb[k]]
