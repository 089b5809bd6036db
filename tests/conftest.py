"""Shared fixtures: the scripts under test, tiny run settings, and small test environments."""

import importlib
import os
import runpy
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# One thread, as OMP_NUM_THREADS=1 gives: on these small networks a second thread costs time instead of saving it (the
# learning tests ran 2–3× slower with two), and the learning tests' figures below were measured with one.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [name for name in ("pg", "npg", "trpo", "ppo_clip", "ppo_kl") if (ROOT / f"{name}.py").exists()]


@pytest.fixture(params=SCRIPTS)
def script(request):
    """Each of the five scripts, imported as a module."""
    return importlib.import_module(request.param)


def pytest_collection_modifyitems(items):
    """The slow tests first, in file order (the harness's, whose Slurm test waits on its cluster, then the learning
    runs, the pixel runs and the probes), then the fast ones: with -n (and --maxschedchunk=1, in pyproject.toml) the
    longest start first and the workers end together."""

    def rank(item) -> int:
        return 0 if item.get_closest_marker("slow") else 1

    items.sort(key=rank)


def unavailable(reason: str):
    """Skips the test, except in CI (CI=true), where everything README promises must run: there it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


def tiny_args(module, **overrides):
    """Args for a run of well under a second; with --save-model, it evaluates a single episode. PPO does 2 epochs of 4
    minibatches: its default 10 × 32 Adam steps per batch took 85 % of a tiny run's time. The critic of pg, npg and
    trpo does 2 epochs of 4 minibatches too, not 5 of 16: their 80 Adam steps per batch took 29 % of a tiny trpo
    run (cProfile)."""
    defaults = dict(total_timesteps=256, num_envs=2, num_steps=64, eval_episodes=1)
    if hasattr(module.Args, "update_epochs"):
        defaults.update(update_epochs=2, num_minibatches=4)
    else:
        defaults.update(vf_iters=2, num_minibatches=4)
    return module.Args(**{**defaults, **overrides})


def command_line(name: str, *argv: str):
    """`python <name>.py *argv`, run in this process (a subprocess would spend seconds importing torch): the code of
    the SystemExit it ends with, or None if it returns. Python prints a str code to stderr, as is, and exits with 1."""
    saved = sys.argv
    sys.argv = [str(ROOT / f"{name}.py"), *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = saved
    return None


def only_run() -> Path:
    """The one run folder under ./runs."""
    (run,) = Path("runs").iterdir()
    return run


def read_scalars(run: Path) -> dict[str, list[float]]:
    """Every scalar a run logged to tensorboard, by key, in the order logged."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {key: [e.value for e in events.Scalars(key)] for key in events.Tags()["scalars"]}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Runs the test inside a temporary folder, so that runs/ lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


class CounterEnv(gym.Env):
    """obs = [episode id, step in the episode]; reward 1; terminates with probability 0.1 per step.

    Episode ids are unique across the envs of a vector env, so a transition whose two ends belong to different
    episodes is visible in its observations."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Discrete(2)
    next_id = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        CounterEnv.next_id += 1
        self.episode, self.t = CounterEnv.next_id, 0
        return np.array([self.episode, self.t], dtype=np.float64), {}

    def step(self, action):
        self.t += 1
        terminated = bool(self.np_random.random() < 0.1)
        return np.array([self.episode, self.t], dtype=np.float64), 1.0, terminated, False, {}


class ConstantEnv(gym.Env):
    """Reward 1 forever from a single state: V(s) = 1/(1 − γ) exactly, and every episode ends by truncation."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float64)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1), {}

    def step(self, action):
        return np.zeros(1), 1.0, False, False, {}


class SpacesEnv(CounterEnv):
    """Counter-v0 with other observation or action spaces, for the checks of which spaces the scripts support."""

    def __init__(self, observation_space=None, action_space=None):
        self.observation_space = observation_space or CounterEnv.observation_space
        self.action_space = action_space or CounterEnv.action_space


class PixelEnv(gym.Env):
    """A 36 × 36 RGB image (H, W, C), black but for one pixel, lit (255) or dark at random. Action 1 pays 1 when it is
    lit, action 0 when it is dark, and the episode ends: a policy that reads the pixel scores 1, one that does not 0.5
    on average."""

    observation_space = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def observe(self):
        self.lit = int(self.np_random.integers(2))
        self.image = np.zeros((36, 36, 3), np.uint8)
        self.image[17, 23, 1] = 255 * self.lit
        return self.image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observe(), {}

    def step(self, action):
        reward = float(action == self.lit)
        return self.observe(), reward, True, False, {}

    def render(self):
        return self.image


gym.register("Counter-v0", entry_point=CounterEnv, max_episode_steps=12)
gym.register("Constant-v0", entry_point=ConstantEnv, max_episode_steps=7)
gym.register("NoTimeLimit-v0", entry_point=ConstantEnv)
gym.register("Pixel-v0", entry_point=PixelEnv)
gym.register("InfiniteBoxActions-v0", entry_point=SpacesEnv, max_episode_steps=12,
             kwargs={"action_space": gym.spaces.Box(-np.inf, np.inf, (2,))})  # fmt: skip

# Spaces the scripts refuse, each with the part of the error message that names it.
UNSUPPORTED = {
    "MultiDiscreteActions-v0": ({"action_space": gym.spaces.MultiDiscrete([2, 3])}, "MultiDiscrete"),
    "MultiBinaryActions-v0": ({"action_space": gym.spaces.MultiBinary(3)}, "MultiBinary"),
    "ShiftedDiscreteActions-v0": ({"action_space": gym.spaces.Discrete(3, start=-1)}, "Discrete(3, start=-1)"),
    "ScalarBoxActions-v0": ({"action_space": gym.spaces.Box(-1.0, 1.0, ())}, "action space Box(-1.0, 1.0, ()"),
    "DictObs-v0": ({"observation_space": gym.spaces.Dict({"x": gym.spaces.Discrete(2)})}, "Dict"),
    "TupleObs-v0": ({"observation_space": gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2)}, "Tuple"),
    "SmallImageObs-v0": (
        {"observation_space": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)},
        "Kernel size can't be greater than actual input size",
    ),
    "ThinImageObs-v0": (
        {"observation_space": gym.spaces.Box(0, 255, (3, 100, 20), np.uint8)},
        "Kernel size can't be greater",
    ),
    "FloatImageObs-v0": (
        {"observation_space": gym.spaces.Box(0.0, 1.0, (36, 36, 3))},
        "observation space Box(0.0, 1.0, (36, 36, 3), float32)",
    ),
    "FlatImageObs-v0": (
        {"observation_space": gym.spaces.Box(0, 255, (84, 84), np.uint8)},
        "observation space Box(0, 255, (84, 84), uint8)",
    ),
}
for env_id, (spaces, _) in UNSUPPORTED.items():
    gym.register(env_id, entry_point=SpacesEnv, kwargs=spaces, max_episode_steps=12)
