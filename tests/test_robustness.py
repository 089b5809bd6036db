"""What a user meets when something goes wrong: non-finite losses, degenerate batches, checkpoints that are missing,
broken or hostile, evaluation that must end, Ctrl-C, and two runs that start in the same second."""

import contextlib
import functools
import importlib
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ROOT, command_line, only_run, read_scalars, tiny_args


def initial_agent(script, env_id: str, seed: int = 1):
    """The agent main builds before its first update: the seed, then the first draws of torch's generator."""
    env = gym.make(env_id)
    torch.manual_seed(seed)
    return script.Agent(env.observation_space.shape[0], env.action_space)


def saved_checkpoint() -> dict:
    (path,) = Path("runs").glob("*/*.model")
    return torch.load(path, weights_only=True)


@functools.cache
def model_file(name: str) -> bytes:
    """The bytes of a tiny CartPole run's checkpoint, trained once per script and session."""
    script = importlib.import_module(name)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        script.main(tiny_args(script, total_timesteps=256, num_steps=64, save_model=True))
        (path,) = Path("runs").glob("*/*.model")
        return path.read_bytes()


def test_episode_statistics_count_every_step(script, in_tmp):
    """Reward 1 on every step: each logged return equals its length, for every episode of every env. The vector
    RecordEpisodeStatistics of gymnasium 1.1–1.3 lost the first step of each episode after the first under same-step
    autoreset, so there the returns were one short."""
    script.main(tiny_args(script, env_id="Counter-v0", total_timesteps=384, num_envs=3, num_steps=128))
    scalars = read_scalars(only_run())
    returns, lengths = scalars["charts/episodic_return"], scalars["charts/episodic_length"]
    assert len(returns) >= 3 * 8  # several episodes in each env
    assert returns == lengths


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_non_finite_loss_skips_the_update(script, in_tmp, monkeypatch, capsys, env_id):
    """NaN advantages make every loss NaN: each update is skipped, so the weights stay the initial ones, a warning is
    printed and the skips are counted in tensorboard."""
    monkeypatch.setattr(script, "compute_gae", lambda rewards, *_: torch.full_like(rewards, torch.nan))
    script.main(tiny_args(script, env_id=env_id, total_timesteps=256, num_steps=64, save_model=True))
    weights = saved_checkpoint()["agent"]
    for name, weight in initial_agent(script, env_id).state_dict().items():
        assert torch.isfinite(weights[name]).all() and torch.equal(weights[name], weight), name
    assert "updates skipped: non-finite loss or gradient" in capsys.readouterr().out
    assert read_scalars(only_run())["charts/skipped_updates"][-1] > 0


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_zero_advantages_leave_the_policy_unchanged(script, in_tmp, monkeypatch, env_id):
    monkeypatch.setattr(script, "compute_gae", lambda rewards, *_: torch.zeros_like(rewards))
    script.main(tiny_args(script, env_id=env_id, total_timesteps=256, num_steps=64, save_model=True))
    weights = saved_checkpoint()["agent"]
    # ppo_kl's Categorical KL has a zero gradient at θ_old only up to round-off (Σ p_old is 1 ± an ulp), which Adam
    # scales up into steps of about 5e-4 here; the code before the rewrite drifted by exactly as much.
    tolerance = 1e-3 if (script.__name__, env_id) == ("ppo_kl", "CartPole-v1") else 0.0
    for name, weight in initial_agent(script, env_id).state_dict().items():
        if not name.startswith("critic."):
            assert torch.allclose(weights[name], weight, rtol=0, atol=tolerance), name


def test_infinite_action_bounds_are_not_clipped(script, in_tmp, monkeypatch):
    sent = []
    step = gym.vector.SyncVectorEnv.step
    monkeypatch.setattr(
        gym.vector.SyncVectorEnv, "step", lambda self, actions: sent.append(actions) or step(self, actions)
    )
    script.main(tiny_args(script, env_id="InfiniteBoxActions-v0", total_timesteps=256, num_steps=64, save_model=True))
    actions = np.concatenate(sent)
    # The N(0, 1) samples, as drawn: clipped to ±1 their std would be 0.72, squashed by tanh 0.63, and neither leaves ±1
    assert np.isfinite(actions).all() and actions.std() > 0.9 and np.abs(actions).max() > 2
    assert all(torch.isfinite(w).all() for w in saved_checkpoint()["agent"].values())


def test_batch_of_one(in_tmp):
    """One sample: its advantage normalises to 0 instead of NaN (the std of one sample is NaN)."""
    import pg

    pg.main(tiny_args(pg, total_timesteps=8, num_envs=1, num_steps=1, num_minibatches=1, save_model=True))
    assert all(torch.isfinite(w).all() for w in saved_checkpoint()["agent"].values())
    assert read_scalars(only_run())["charts/skipped_updates"][-1] == 0


@pytest.mark.parametrize("env_id", ["Pendulum-v1"])  # normalised: the saved statistics must come back
def test_eval_checkpoint_matches_the_in_memory_evaluation(script, in_tmp, monkeypatch, env_id):
    evaluations = []
    evaluate = script.evaluate
    monkeypatch.setattr(script, "evaluate", lambda *a: evaluations.append(evaluate(*a)) or evaluations[-1])
    script.main(
        tiny_args(script, env_id=env_id, total_timesteps=512, num_steps=128, save_model=True, seed=4, eval_episodes=3)
    )
    (path,) = Path("runs").glob("*/*.model")
    returns = script.main(script.Args(eval_checkpoint=str(path), eval_episodes=3, seed=4))
    assert evaluations[0] == returns and len(returns) == 3
    assert len(set(returns)) > 1, "the episodes should differ"


def test_evaluation_ends_without_a_time_limit():
    """NoTimeLimit-v0 never ends by itself: evaluation cuts each episode at 1,000 steps. One script: evaluate, rollout,
    make_env and the Agent are the same text in all five (tests/test_shape.py)."""
    script = importlib.import_module("pg")
    agent = script.Agent(1, gym.spaces.Discrete(2))
    normalizer = script.Normalizer(1, 1, 0.99, False, False)
    envs = script.make_env("NoTimeLimit-v0", 1, time_limit=script.EVAL_TIME_LIMIT)
    assert script.evaluate(agent, normalizer, envs, 2, seed=0) == [1000.0, 1000.0]
    envs.close()


def test_checkpoint_holds_only_plain_data(script, in_tmp):
    script.main(tiny_args(script, env_id="Pendulum-v1", total_timesteps=256, num_steps=64, save_model=True))
    (path,) = Path("runs").glob("*/*.model")
    assert not list(path.parent.glob("*tmp*")), "the temporary file is renamed, not left behind"
    checkpoint = torch.load(path, weights_only=True)  # raises if anything but tensors and plain values is inside
    assert checkpoint["args"]["env_id"] == "Pendulum-v1" and checkpoint["args"]["norm_obs"] is True


class Payload:
    """Unpickling this would create the file `marker`: the code a hostile checkpoint runs."""

    def __reduce__(self):
        return (Path.touch, (Path("marker").absolute(),))


@pytest.mark.parametrize("how", ["missing", "truncated", "garbage", "pickled object", "foreign"])
def test_bad_checkpoint_gets_a_clear_error(script, in_tmp, how):
    data, path, bad = model_file(script.__name__), in_tmp / "good.model", in_tmp / "bad.model"
    path.write_bytes(data)
    if how == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        bad.write_bytes(bytes(range(256)) * 10)
    elif how == "pickled object":
        torch.save({**torch.load(path, weights_only=True), "extra": Payload()}, bad)
        assert not (in_tmp / "marker").exists()
    elif how == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(SystemExit) as exit_info:
        script.main(script.Args(eval_checkpoint=str(bad)))
    message = str(exit_info.value)
    assert message.startswith(f"{script.__name__}: error: --eval-checkpoint {bad}: ") and "\n" not in message
    assert not (in_tmp / "marker").exists(), "the checkpoint's code ran"


def test_pickled_object_is_refused_from_the_command_line(in_tmp, capsys):
    torch.save({"args": {}, "extra": Payload()}, "bad.model")
    code = command_line("pg", "--eval-checkpoint", "bad.model")
    assert isinstance(code, str) and "\n" not in code, "Python prints a str code as one line on stderr and exits with 1"
    assert code.startswith("pg: error: --eval-checkpoint bad.model: UnpicklingError")
    assert capsys.readouterr().err == ""
    assert not (in_tmp / "marker").exists() and pickle  # pickle: the module a plain torch.load would have used


def test_ctrl_c_saves_flushes_and_exits_130(script, in_tmp, monkeypatch):
    rollout, calls = script.rollout, []

    def interrupted_rollout(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return rollout(*args)

    monkeypatch.setattr(script, "rollout", interrupted_rollout)
    with pytest.raises(SystemExit) as exit_info:
        script.main(tiny_args(script, total_timesteps=1024, num_steps=64, save_model=True))
    assert exit_info.value.code == 130
    assert len(read_scalars(only_run())["losses/kl"]) == 2  # the two finished iterations reached tensorboard
    assert set(saved_checkpoint()) == {"script", "agent", "normalizer", "args"}


def test_a_real_sigint_saves_flushes_and_exits_130(in_tmp):
    """SIGINT, as Ctrl-C sends it, to a training process once it has printed its first progress line: it exits with
    130, its checkpoint loads with weights_only=True, and the events of the finished iterations are on disk. main's
    handler is the same text in every script; pg stands for them here."""
    import signal

    command = [sys.executable, "-u", str(ROOT / "pg.py"), "--total-timesteps", "10000000", "--num-steps", "64"]
    process = subprocess.Popen(
        [*command, "--save-model"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A pytest -n worker ignores SIGINT, and a child would inherit that: Python makes Ctrl-C a KeyboardInterrupt
        # only where SIGINT has its default action at startup, as in a shell.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in process.stdout:
            if line.startswith("step"):
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "pg: interrupted at step" in stderr and "Traceback" not in stderr
    assert set(saved_checkpoint()) == {"script", "agent", "normalizer", "args"}
    assert len(read_scalars(only_run())["losses/kl"]) >= 1


def test_runs_in_the_same_second_get_their_own_folders(script, in_tmp, monkeypatch):
    clock = iter(np.arange(1_000_000.0, 1_000_000.9, 0.001))
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    for _ in range(2):
        script.main(tiny_args(script, total_timesteps=128, num_steps=64))
    runs = sorted(Path("runs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith(f"CartPole-v1__{script.__name__}__1__1000000") for r in runs)
    assert all(len(list(r.iterdir())) == 1 for r in runs), "each folder holds one run's events"


def test_only_env_0_is_filmed(script, monkeypatch):
    filmed = []
    monkeypatch.setattr(gym.wrappers, "RecordVideo", lambda env, folder: filmed.append((env, folder)) or env)
    envs = script.make_env("CartPole-v1", 3, video_folder="videos/run")
    assert len(filmed) == 1 and filmed[0][1] == "videos/run"
    assert filmed[0][0] is envs.unwrapped.envs[0] and filmed[0][0].render_mode == "rgb_array"
    envs.close()
