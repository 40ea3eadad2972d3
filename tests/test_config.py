import pytest

from lompo_core.config import ALGOS, Config, differences, load_presets, parse_overrides, resolve
from lompo_core.errors import LompoError


@pytest.mark.parametrize("name", ["debug", "cpu", "paper"])
def test_presets_resolve(name):
    cfg = resolve(name)
    assert isinstance(cfg, Config)
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_paper_preset_has_the_reference_sizes():
    cfg = resolve("paper")
    assert (cfg.model.depth, cfg.model.deter, cfg.model.stoch, cfg.model.heads) == (32, 256, 64, 7)
    assert (cfg.world.batch, cfg.world.length, cfg.world.steps) == (64, 50, 25_000)
    assert cfg.agent.steps == 100_000 and cfg.agent.lmbda == 5.0 and cfg.agent.horizon == 5


def test_overrides_dotted_and_typed():
    cfg = resolve(
        "cpu",
        ["agent.lmbda=0", "agent.rollouts=false", "world.steps=1e3", "agent.target_entropy=null"],
    )
    assert cfg.agent.lmbda == 0.0 and isinstance(cfg.agent.lmbda, float)
    assert cfg.agent.rollouts is False
    assert cfg.world.steps == 1000 and isinstance(cfg.world.steps, int)
    assert cfg.agent.target_entropy is None
    assert resolve("cpu", ["agent.target_entropy=-2"]).agent.target_entropy == -2.0


def test_unknown_key_names_a_close_match():
    with pytest.raises(LompoError, match="agent.lmbda"):
        resolve("cpu", ["agent.lambda=1"])


@pytest.mark.parametrize(
    "item", ["world.steps=abc", "agent.rollouts=3", "model.depth=1.5", "agent.penalty=max"]
)
def test_bad_values_are_refused(item):
    with pytest.raises(LompoError):
        resolve("cpu", [item])


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("world.lr=nan", "world.lr=nan must be a finite number"),
        ("agent.lmbda=inf", "agent.lmbda=inf must be a finite number"),
        ("model.deter=0", "model.deter=0 must be > 0"),
        ("agent.discount=2", "agent.discount=2.0 must be in (0, 1)"),
        ("agent.discount=1", "must be in (0, 1)"),
        ("agent.tau=0", "agent.tau=0.0 must be > 0"),
        ("world.steps=-5", "world.steps=-5 must be >= 0"),
        ("agent.max_linear_speed=-0.5", "agent.max_linear_speed=-0.5 must be >= 0"),
        ("world.select=best", "world.select must be last or heldout"),
        ("world.still_fraction=1", "world.still_fraction=1.0 must be in [0, 1)"),
        ("agent.rest_starts=1.5", "agent.rest_starts=1.5 must be in [0, 1]"),
        ("agent.actor_lr_decay=1.5", "agent.actor_lr_decay=1.5 must be in [0, 1]"),
        ("agent.actor_swa=1.5", "agent.actor_swa=1.5 must be in [0, 1], and needs agent.actor_ema"),
        ("agent.refit_end_steps=-1", "agent.refit_end_steps=-1 must be >= 0"),
        ("agent.select=best", "agent.select must be last, offline or average"),
        ("world.check_stride=0", "world.check_stride and world.check_samples must be at least 1"),
        ("log.every=0", "log.every=0 must be > 0"),
    ],
)
def test_values_that_cannot_train_are_refused_by_name(item, words):
    with pytest.raises(LompoError) as info:
        resolve("cpu", [item])
    assert words in str(info.value)


def test_malformed_override_and_unknown_preset():
    with pytest.raises(LompoError, match="key=value"):
        parse_overrides(["world.steps"])
    with pytest.raises(LompoError, match="unknown preset"):
        resolve("gpu")


def test_differences_ignore_runtime_keys():
    a, b = resolve("debug"), resolve("debug", ["threads=2", "device=cpu", "seed=3"])
    assert differences(a, b) == ["seed: 0 -> 3"]


def test_presets_file_only_names_known_keys():
    for name, body in load_presets().items():
        Config.from_dict(body or {}, where=name)  # raises on an unknown key


@pytest.mark.parametrize("algo", list(ALGOS))
def test_each_algo_is_its_overrides_recorded_by_name(algo):
    cfg = resolve("cpu", [f"algo={algo}"])
    assert cfg.algo == algo
    assert (cfg.agent.learner == "bc") == algo.endswith("bc")
    assert cfg.agent.rollouts == (algo in ("lompo", "lambda0"))
    assert cfg.agent.successful_only == (algo == "filtered_bc")
    assert (cfg.agent.lmbda == 0.0) == (algo == "lambda0")


def test_user_overrides_come_after_the_algo_and_bad_algos_are_refused():
    assert resolve("cpu", ["agent.lmbda=1", "algo=lambda0"]).agent.lmbda == 1.0
    with pytest.raises(LompoError, match="unknown algo 'dqn'; choose one of lompo"):
        resolve("cpu", ["algo=dqn"])
    with pytest.raises(LompoError, match="agent.learner=bc trains on dataset transitions only"):
        resolve("cpu", ["algo=bc", "agent.rollouts=true"])
    with pytest.raises(LompoError, match="agent.learner must be one of sac, bc"):
        resolve("cpu", ["agent.learner=cql"])


def test_an_average_over_the_last_share_needs_the_acting_copy():
    with pytest.raises(LompoError, match="needs agent.actor_ema > 0"):
        resolve("cpu", ["agent.actor_ema=0", "agent.actor_swa=0.3"])
