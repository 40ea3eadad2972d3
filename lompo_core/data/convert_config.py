"""What ``lompo convert`` needs to know about a robot's bags: topics, rates, limits, crop.

The defaults convert the bags ``lompo collect`` writes with no configuration at all; a YAML file
(``--config``) describes another robot, and command-line flags override single fields of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lompo_core import messages as m
from lompo_core.errors import ImageError, LompoError
from lompo_core.image import Preprocessing

REWARD_KINDS = ("topic", "success", "labels", "none")
COLLECT_MAX_SPEED = 0.8  # m/s per axis: lompo collect's normalised 1.0


@dataclass(frozen=True)
class ActionSpec:
    """Which numbers of the command message form the action, and their physical limits."""

    # Twist/TwistStamped: dotted field names (None: linear.x/y/z); Float*MultiArray: indices
    # into data (None: all of them).
    fields: tuple[str, ...] | None = None
    max: tuple[float, ...] | float = COLLECT_MAX_SPEED  # |command| that maps to 1.0, per axis
    unit: str = "m/s"

    def limits(self, dim: int) -> tuple[float, ...]:
        limits = (float(self.max),) * dim if isinstance(self.max, (int, float)) else self.max
        if len(limits) != dim:
            raise LompoError(f"action max has {len(limits)} values, the action has {dim} fields")
        return tuple(float(v) for v in limits)


STAMP_SOURCES = ("header", "log")


@dataclass(frozen=True)
class ConvertConfig:
    image_topic: str = m.IMAGE_TOPIC
    action_topic: str = m.COMMAND_TOPIC
    reward: str = "topic"  # one of REWARD_KINDS
    reward_topic: str = m.REWARD_TOPIC  # std_msgs/Float32, summed over a step
    # std_msgs/Bool; where present in a bag, a rising edge ends the episode as terminal (and is
    # the reward with reward="success"). None: never read.
    success_topic: str | None = m.SUCCESS_TOPIC
    labels: Path | None = None  # per-episode success labels (reward="labels")
    action: ActionSpec = field(default_factory=ActionSpec)
    rate_hz: float | None = None  # control rate; None: the action topic's median rate
    tolerance_s: float | None = None  # stamp matching; None: a quarter of a control period
    gap_s: float | None = None  # longer silence ends an episode; None: max(0.2 s, 4 periods)
    max_latency_s: float = 0.5  # how late (bag time) a message may arrive behind its stamp
    # What a message's time is: "header" (its header stamp, where it has one) or "log" (when the
    # recorder received it): for a camera whose clock runs apart from the robot's, or sim-time
    # stamps recorded without use_sim_time.
    stamps: str = "header"
    min_length: int = 2  # shorter episodes are dropped (and counted)
    max_length: int = 1000  # longer ones are cut (not terminal): memory stays bounded
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    distro: str = "jazzy"  # message definitions for old bags that store none
    compress: bool = False  # np.savez_compressed for the episode files

    def __post_init__(self) -> None:
        if self.reward not in REWARD_KINDS:
            raise LompoError(
                f"reward must be one of {', '.join(REWARD_KINDS)}, got {self.reward!r}"
            )
        if self.stamps not in STAMP_SOURCES:
            raise LompoError(
                f"stamps must be one of {', '.join(STAMP_SOURCES)}, got {self.stamps!r}"
            )
        if self.reward == "labels" and self.labels is None:
            raise LompoError("reward 'labels' needs a labels file (--labels FILE)")
        if self.reward == "success" and not self.success_topic:
            raise LompoError("reward 'success' needs a success topic (--success-topic T)")
        for name in ("rate_hz", "tolerance_s", "gap_s", "max_latency_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise LompoError(f"{name} must be positive, got {value!r}")
        if self.min_length < 2 or self.max_length < self.min_length:
            raise LompoError(
                f"episode lengths must satisfy 2 <= min_length <= max_length, got "
                f"{self.min_length} and {self.max_length}"
            )

    def timing(self, rate_hz: float) -> tuple[int, int, int]:
        """(period, tolerance, gap limit) in nanoseconds at this control rate."""
        dt = 1e9 / rate_hz
        tol = self.tolerance_s * 1e9 if self.tolerance_s is not None else dt / 4
        gap = self.gap_s * 1e9 if self.gap_s is not None else max(0.2e9, 4 * dt)
        if tol >= dt / 2:
            raise LompoError(
                f"tolerance {tol / 1e9:g} s must be under half a control period ({dt / 2e9:g} s at "
                f"{rate_hz:g} Hz), or one message could match two steps"
            )
        if gap <= dt:
            raise LompoError(f"gap limit {gap / 1e9:g} s must exceed a control period")
        return int(round(dt)), int(round(tol)), int(round(gap))

    def as_dict(self) -> dict[str, Any]:
        return {
            "topics": {
                "image": self.image_topic,
                "action": self.action_topic,
                "reward": self.reward_topic,
                "success": self.success_topic,
            },
            "reward": self.reward,
            "labels": None if self.labels is None else str(self.labels),
            "action": {
                "fields": None if self.action.fields is None else list(self.action.fields),
                "max": self.action.max
                if isinstance(self.action.max, (int, float))
                else list(self.action.max),
                "unit": self.action.unit,
            },
            "rate_hz": self.rate_hz,
            "tolerance_s": self.tolerance_s,
            "gap_s": self.gap_s,
            "max_latency_s": self.max_latency_s,
            "stamps": self.stamps,
            "episode": {"min_length": self.min_length, "max_length": self.max_length},
            "preprocessing": self.preprocessing.as_dict(),
            "distro": self.distro,
            "compress": self.compress,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> ConvertConfig:
        """The YAML layout of docs/convert.md; unknown keys are refused (typos must not pass)."""
        d = dict(d or {})
        top = {
            "topics",
            "reward",
            "labels",
            "action",
            "rate_hz",
            "tolerance_s",
            "gap_s",
            "max_latency_s",
            "stamps",
            "episode",
            "preprocessing",
            "distro",
            "compress",
        }
        _refuse_unknown(d, top, where)
        kw: dict[str, Any] = {}
        topics = dict(d.get("topics") or {})
        _refuse_unknown(topics, {"image", "action", "reward", "success"}, f"{where}: topics")
        for key, name in (
            ("image", "image_topic"),
            ("action", "action_topic"),
            ("reward", "reward_topic"),
            ("success", "success_topic"),
        ):
            if key in topics:
                kw[name] = topics[key]
        for key in (
            "reward",
            "rate_hz",
            "tolerance_s",
            "gap_s",
            "max_latency_s",
            "stamps",
            "distro",
        ):
            if d.get(key) is not None:
                kw[key] = d[key]
        if d.get("labels") is not None:
            kw["labels"] = Path(d["labels"])
        if "compress" in d:
            kw["compress"] = bool(d["compress"])
        if d.get("action") is not None:
            a = dict(d["action"])
            _refuse_unknown(a, {"fields", "max", "unit"}, f"{where}: action")
            fields = a.get("fields")
            mx = a.get("max", COLLECT_MAX_SPEED)
            kw["action"] = ActionSpec(
                fields=None if fields is None else tuple(str(f) for f in fields),
                max=float(mx) if isinstance(mx, (int, float)) else tuple(float(v) for v in mx),
                unit=str(a.get("unit", "m/s")),
            )
        episode = dict(d.get("episode") or {})
        _refuse_unknown(episode, {"min_length", "max_length"}, f"{where}: episode")
        for key in ("min_length", "max_length"):
            if key in episode:
                kw[key] = int(episode[key])
        if d.get("preprocessing") is not None:
            try:
                kw["preprocessing"] = Preprocessing.from_dict(dict(d["preprocessing"]))
            except ImageError as exc:
                raise LompoError(f"{where}: {exc}") from None
        try:
            return cls(**kw)
        except (TypeError, ValueError) as exc:
            raise LompoError(f"{where}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: Path) -> ConvertConfig:
        from lompo_core.files import read_yaml

        path = Path(path)
        config = cls.from_dict(read_yaml(path, "config file"), where=str(path))
        if config.labels is not None and not config.labels.is_absolute():
            # A labels path in a config file is relative to the file, not to the caller's cwd.
            config = replace(config, labels=path.parent / config.labels)
        return config


def _refuse_unknown(d: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(d) - known
    if unknown:
        raise LompoError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
