"""The plumbing below each script's fence: checkpoints and evaluation, env ids of the form module:Env, Ctrl-C, run
folders, every env closed, nothing made that the run does not use, video, and --help."""

import importlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from conftest import PLUMBING, ROOT, PayEnv, only_run, read_scalars, saved_checkpoint, tiny_args, train_and_load

import ppo_clip

MODULE = """import gymnasium as gym
gym.register("Unregistered-v0", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv", max_episode_steps=20)
"""


# The plumbing is the same text in every script (tests/test_shape.py), so its behaviour is checked on two of them.
TWO = pytest.mark.parametrize("script", ["pg", "trpo"], indirect=True)


# ---- Checkpoints and evaluation


def test_checkpoint_holds_only_plain_data(script, in_tmp):
    script.main(tiny_args(script, env_id="Pendulum-v1", total_timesteps=256, num_steps=64, save_model=True))
    (path,) = Path("runs").glob("*/*.model")
    assert not list(path.parent.glob("*tmp*")), "the temporary file is renamed, not left behind"
    checkpoint = torch.load(path, weights_only=True)  # raises if anything but tensors and plain values is inside
    assert checkpoint["args"]["env_id"] == "Pendulum-v1" and checkpoint["args"]["norm_obs"] is True


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


@pytest.mark.parametrize("name", PLUMBING)
def test_image_checkpoint_evaluates_as_in_memory(name, in_tmp, monkeypatch):
    script = importlib.import_module(name)
    evaluations, evaluate = [], script.evaluate
    monkeypatch.setattr(script, "evaluate", lambda *a: evaluations.append(evaluate(*a)) or evaluations[-1])
    script.main(tiny_args(script, env_id="Pixel-v0", total_timesteps=128, save_model=True, eval_episodes=3))
    (path,) = Path("runs").glob("*/*.model")
    assert script.main(script.Args(eval_checkpoint=str(path), eval_episodes=3)) == evaluations[0]


def test_evaluation_reuses_training_obs_statistics(script, in_tmp):
    """evaluate() must give what the saved policy gets on observations normalised by the saved statistics."""
    checkpoint, *_ = train_and_load(script, env_id="Pendulum-v1")
    mean, var, count = (checkpoint["normalizer"]["obs"][k].numpy() for k in ("mean", "var", "count"))
    assert checkpoint["args"]["norm_obs"] and count > 500 and np.abs(mean).max() > 1e-3
    agent = script.Agent(3, gym.make("Pendulum-v1").action_space)
    agent.load_state_dict(checkpoint["agent"])
    normalizer = script.Normalizer(3, 2, 0.99, True, True)
    normalizer.load_state_dict(checkpoint["normalizer"])
    envs = script.make_env("Pendulum-v1", 1, time_limit=script.EVAL_TIME_LIMIT)
    (evaluated,) = script.evaluate(agent, normalizer, envs, 1, seed=5)
    envs.close()
    assert normalizer.stats["obs"].count == count, "evaluation must not update the statistics"

    def replay(mean, var):
        env = gym.make("Pendulum-v1")
        raw, _ = env.reset(seed=5)
        total, done = 0.0, False
        while not done:
            obs = torch.tensor(np.clip((raw - mean) / np.sqrt(var + 1e-8), -10, 10), dtype=torch.float32)
            with torch.no_grad():
                action = agent.dist(obs).mean.numpy().clip(-2.0, 2.0)
            raw, reward, terminated, truncated, _ = env.step(action)
            total, done = total + reward, terminated or truncated
        return total

    assert evaluated == pytest.approx(replay(mean, var), rel=1e-5)
    assert evaluated != pytest.approx(replay(np.zeros(3), np.ones(3)), rel=1e-3)


def test_evaluation_ends_without_a_time_limit():
    """NoTimeLimit-v0 never ends by itself: evaluation cuts each episode at 1,000 steps. One script: evaluate, rollout,
    make_env and the Agent are the same text in all five (tests/test_shape.py)."""
    script = importlib.import_module("pg")
    agent = script.Agent(1, gym.spaces.Discrete(2))
    normalizer = script.Normalizer(1, 1, 0.99, False, False)
    envs = script.make_env("NoTimeLimit-v0", 1, time_limit=script.EVAL_TIME_LIMIT)
    assert script.evaluate(agent, normalizer, envs, 2, seed=0) == [1000.0, 1000.0]
    envs.close()


@pytest.mark.parametrize("name", PLUMBING)
def test_evaluation_prints_and_returns_each_episode_s_own_return_and_length(name, capsys):
    """Pay-v0 pays 0.5 + 0.1·t at step t, so no return is a length: evaluate prints each episode's return, its length
    and whether the time limit cut it, then their mean and std, and returns the returns, all the env's own."""
    script = importlib.import_module(name)
    PayEnv.ended.clear()
    envs = script.make_env("Pay-v0", 1, time_limit=script.EVAL_TIME_LIMIT)
    returns = script.evaluate(script.Agent(1, envs.single_action_space), script.Normalizer(1, 1, 0.99, False, False),
                              envs, 8, seed=0)  # fmt: skip
    envs.close()
    truth = [(paid, length, truncated) for _, _, paid, length, truncated in PayEnv.ended[:8]]
    assert {truncated for *_, truncated in truth} == {False, True} and len({length for _, length, _ in truth}) > 2
    assert returns == pytest.approx([paid for paid, _, _ in truth], rel=1e-6)
    lines = capsys.readouterr().out.splitlines()
    expected = [f"eval episode {i}: return {paid:.2f} in {length} steps" + " (truncated)" * truncated
                for i, (paid, length, truncated) in enumerate(truth, 1)]  # fmt: skip
    paid = [paid for paid, _, _ in truth]
    assert lines == [*expected, f"eval: {np.mean(paid):.2f} ± {np.std(paid):.2f} over 8 episodes of Pay-v0"]


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


# ---- Ctrl-C, run folders, envs, video, --help


def test_ctrl_c_saves_flushes_and_exits_130(script, in_tmp, monkeypatch, capsys):
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
    assert f"{script.__name__}: interrupted at step 256\n" in capsys.readouterr().err  # 2 iterations of 2 × 64 steps
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


def test_only_env_0_is_filmed(script, monkeypatch):
    filmed = []
    monkeypatch.setattr(gym.wrappers, "RecordVideo", lambda env, folder: filmed.append((env, folder)) or env)
    envs = script.make_env("CartPole-v1", 3, video_folder="videos/run")
    assert len(filmed) == 1 and filmed[0][1] == "videos/run"
    assert filmed[0][0] is envs.unwrapped.envs[0] and filmed[0][0].render_mode == "rgb_array"
    envs.close()


def test_capture_video_films_the_image_env(in_tmp, monkeypatch):
    """The filmed env renders its frames through make_one; RecordVideo (which needs moviepy) is replaced by a
    recorder of what it would have encoded."""
    frames = []

    class Recorder(gym.Wrapper):
        def __init__(self, env, folder):
            super().__init__(env)

        def step(self, action):
            out = self.env.step(action)
            frames.append(self.env.render())
            return out

    monkeypatch.setattr(gym.wrappers, "RecordVideo", Recorder)
    ppo_clip.main(tiny_args(ppo_clip, env_id="Pixel-v0", capture_video=True))
    assert len(frames) >= 128 and all(f.shape == (36, 36, 3) and f.dtype == np.uint8 for f in frames)


def test_help(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(script.Args, args=["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--env-id" in out and "--total-timesteps" in out and "--eval-checkpoint" in out
