"""The plumbing below each script's fence: env ids of the form module:Env, checkpoints that say which script saved
them, every env closed, nothing made that the run does not use, and trpo's explicit skip of a non-finite step."""

import tempfile
from pathlib import Path

import gymnasium as gym
import pytest
import test_robustness
import torch
from conftest import SCRIPTS, only_run, read_scalars, tiny_args

import trpo

MODULE = """import gymnasium as gym
gym.register("Unregistered-v0", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv", max_episode_steps=20)
"""


# The plumbing is the same text in every script (tests/test_shape.py), so its behaviour is checked on two of them.
TWO = pytest.mark.parametrize("script", ["pg", "trpo"], indirect=True)


@TWO
def test_module_env_ids_train_save_and_evaluate(script, in_tmp, monkeypatch):
    """gym.make("pkg.module:Env-v0") imports the module, which registers the env; gym.spec does not, so nothing after
    training may look the id up there."""
    (in_tmp / "user_envs.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(in_tmp))
    args = tiny_args(script, env_id="user_envs:Unregistered-v0", save_model=True, eval_episodes=3)
    assert script.check_args(args) is None
    script.main(args)
    (path,) = Path("runs").glob("*/*.model")
    returns = script.main(script.Args(eval_checkpoint=str(path), eval_episodes=3))
    assert len(returns) == 3 and all(0 < r <= 20 for r in returns)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_checkpoint_from_another_script_names_the_script_that_saved_it(name, in_tmp):
    saver = SCRIPTS[(SCRIPTS.index(name) + 1) % len(SCRIPTS)]
    (in_tmp / "other.model").write_bytes(test_robustness.model_file(saver))
    script = __import__(name)
    with pytest.raises(SystemExit) as exit_info:
        script.main(script.Args(eval_checkpoint="other.model"))
    assert str(exit_info.value) == (
        f"{name}: error: --eval-checkpoint other.model: ValueError: it was saved by {saver}.py, not by {name}.py"
    )


@pytest.fixture
def opened(monkeypatch):
    """Every env that gym.make returns, and whether it was closed."""
    envs, make = {}, gym.make

    def tracked_make(*args, **kwargs):
        env = make(*args, **kwargs)
        close = env.close
        envs[env] = False

        def tracked_close():
            envs[env] = True
            close()

        env.close = tracked_close
        return env

    monkeypatch.setattr(gym, "make", tracked_make)
    return envs


@TWO
def test_every_env_that_is_opened_is_closed(script, in_tmp, opened):
    script.main(tiny_args(script, env_id="Pendulum-v1", save_model=True, eval_episodes=2))
    trained = len(opened)
    assert trained == 1 + 2 + 1, "the check, the two training envs, the evaluation env"
    (path,) = Path("runs").glob("*/*.model")
    script.main(script.Args(eval_checkpoint=str(path), eval_episodes=2))
    assert len(opened) == trained + 1, "--eval-checkpoint makes one env, the checkpoint's"
    assert all(opened.values()), f"{sum(not c for c in opened.values())} of {len(opened)} envs were left open"


def test_no_temporary_folder_without_capture_video(script, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a temporary folder was made")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", refuse)
    assert script.check_args(script.Args()) is None


def test_trpo_skips_the_line_search_on_a_non_finite_step(in_tmp, monkeypatch):
    """NaN advantages give a NaN step: the line search is not even tried, and θ stays θ_old bit for bit."""
    calls = []
    monkeypatch.setattr(trpo, "line_search", lambda *args: calls.append(args))
    monkeypatch.setattr(trpo, "compute_gae", lambda rewards, *_: torch.full_like(rewards, torch.nan))
    trpo.main(tiny_args(trpo, env_id="Pendulum-v1", total_timesteps=128, save_model=True))
    assert calls == []
    assert read_scalars(only_run())["charts/line_search_steps"] == [0.0], "no step was tried"
    weights = test_robustness.saved_checkpoint()["agent"]
    for name, weight in test_robustness.initial_agent(trpo, "Pendulum-v1").state_dict().items():
        assert torch.equal(weights[name], weight), name
