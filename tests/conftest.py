"""Shared fixtures: the scripts under test, tiny run settings, and small test environments."""

import copy
import importlib
import os
import runpy
import shutil
import signal
import sys
from dataclasses import dataclass, field
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
# The benchmark harness's modules, for tests/test_harness_*.py.
sys.path.insert(0, str(ROOT / "benchmarks"))
common, peers, report, run = (importlib.import_module(name) for name in ("common", "peers", "report", "run"))


@pytest.fixture(params=SCRIPTS)
def script(request):
    """Each of the five scripts, imported as a module."""
    return importlib.import_module(request.param)


def pytest_collection_modifyitems(items):
    """The slow tests first, in file order (the runner's, whose Slurm test waits on its cluster, then the learning
    runs, the probes and the pixel runs), then the fast ones: with -n (and --maxschedchunk=1, in pyproject.toml) the
    longest start first and the workers end together."""

    def rank(item) -> int:
        return 0 if item.get_closest_marker("slow") else 1

    items.sort(key=rank)


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt, as in a shell, for the tests that send it to their own process: a process
    started in the background (nohup, a detached job) ignores SIGINT, and so would pytest and its workers."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


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


def events(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run folder, by key, as (step, value), read as tensorboard reads it: across the files of a
    resumed run, what a resumed run purged is gone."""
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {key: [(e.step, e.value) for e in accumulator.Scalars(key)] for key in accumulator.Tags()["scalars"]}


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


class PayEnv(gym.Env):
    """obs = [t / 8]; step t of an episode (from 0) pays 0.5 + 0.1·t, so that no episode's return is its length, and
    the first step's reward is not 0; terminates with probability 0.2 a step, or is cut by the time limit. Every
    instance appends each episode it ends to PayEnv.ended, as (serial, steps, return, length, truncated): serial is the
    instance's place among those made (a vector env makes env 0 first), steps how many steps it had taken by then."""

    observation_space = gym.spaces.Box(0.0, np.inf, (1,), np.float64)
    ended: list[tuple[int, int, float, int, bool]] = []
    made, time_limit = 0, 8

    def __init__(self, continuous: bool = False):
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,)) if continuous else gym.spaces.Discrete(2)
        self.serial, self.steps = PayEnv.made, 0
        PayEnv.made += 1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.paid = 0, 0.0
        return np.zeros(1), {}

    def step(self, action):
        reward = 0.5 + 0.1 * self.t
        self.t, self.paid, self.steps = self.t + 1, self.paid + reward, self.steps + 1
        terminated = bool(self.np_random.random() < 0.2)
        if terminated or self.t == PayEnv.time_limit:
            PayEnv.ended.append((self.serial, self.steps, self.paid, self.t, not terminated))
        return np.array([self.t / 8]), reward, terminated, False, {}


class SpacesEnv(CounterEnv):
    """Counter-v0 with other observation or action spaces, for the checks of which spaces the scripts support."""

    def __init__(self, observation_space=None, action_space=None):
        self.observation_space = observation_space or CounterEnv.observation_space
        self.action_space = action_space or CounterEnv.action_space


class PixelEnv(gym.Env):
    """A 36 × 36 RGB image (H, W, C), black but for one pixel, lit (255) or dark at random. Action 1 pays 1 when it is
    lit, action 0 when it is dark, and the episode ends: a policy that reads the pixel scores 1, one that does not 0.5
    on average. continuous: a ∈ [−1, 1] pays −(a − lit)²."""

    observation_space = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode=None, continuous: bool = False):
        self.render_mode = render_mode
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,)) if continuous else gym.spaces.Discrete(2)

    def observe(self):
        self.lit = int(self.np_random.integers(2))
        self.image = np.zeros((36, 36, 3), np.uint8)
        self.image[17, 23, 1] = 255 * self.lit
        return self.image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observe(), {}

    def step(self, action):
        reward = -float((action[0] - self.lit) ** 2) if self.action_space.shape else float(action == self.lit)
        return self.observe(), reward, True, False, {}

    def render(self):
        return self.image


gym.register("Counter-v0", entry_point=CounterEnv, max_episode_steps=12)
gym.register("Constant-v0", entry_point=ConstantEnv, max_episode_steps=7)
gym.register("NoTimeLimit-v0", entry_point=ConstantEnv)
gym.register("Pay-v0", entry_point=PayEnv, max_episode_steps=PayEnv.time_limit)
gym.register("BoxPay-v0", entry_point=PayEnv, max_episode_steps=PayEnv.time_limit, kwargs={"continuous": True})
gym.register("Pixel-v0", entry_point=PixelEnv)
gym.register("BoxPixel-v0", entry_point=PixelEnv, kwargs={"continuous": True})
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


# ---- Probe environments (Andy Jones, "Debugging RL, Without the Agonizing Pain"): tests/test_learning.py
# trains on them, tests/test_wiring.py and tests/test_method.py watch one update on them.


class ProbeEnv(gym.Env):
    """A one-dimensional Box observation and Discrete(2) actions, unless a subclass says otherwise. Subclasses define
    first_obs() and transition(action) -> (obs, reward, terminated)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float64)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.first_obs(), {}

    def step(self, action):
        self.t += 1
        obs, reward, terminated = self.transition(action)
        return obs, reward, terminated, False, {}

    def first_obs(self):  # a constant obs of 1, not 0, so that the first layer's weights matter from the start
        return np.ones(1)


class ConstantRewardEnv(ProbeEnv):
    """Probe 1: obs 1, reward 1, one step: V(1) = 1. Fails if the critic cannot fit a constant."""

    def transition(self, action):
        return np.ones(1), 1.0, True


class ObsRewardEnv(ProbeEnv):
    """Probe 2: obs ±1 at random, reward = obs, one step: V(±1) = ±1. Fails if the critic ignores the observation."""

    def first_obs(self):
        self.sign = float(self.np_random.choice([-1.0, 1.0]))
        return np.array([self.sign])

    def transition(self, action):
        return np.zeros(1), self.sign, True


class DelayedRewardEnv(ProbeEnv):
    """Probe 3: obs 0, then obs 1, then reward 1 and the end: V(1) = 1 and V(0) = γ. Fails if the discount or the
    bootstrap from the next state is wrong."""

    def first_obs(self):
        return np.zeros(1)

    def transition(self, action):
        return np.array([1.0]), float(self.t == 2), self.t == 2


class BanditEnv(ProbeEnv):
    """Probe 4: obs 1, one step, reward 1 for action 1 and 0 for action 0. Fails if the policy gradient's sign or its
    advantage is wrong."""

    def transition(self, action):
        return np.ones(1), float(action == 1), True


class TargetEnv(ProbeEnv):
    """Probe 5: obs 1, one step, a ∈ [−3, 3], reward −(a − 0.5)²: the Gaussian mean must move to 0.5. Fails if the
    Gaussian head's gradient is wrong. The bounds are wide because the scripts clip the sampled action to them: with
    bounds ±1 and the initial σ = 1, the clipped rewards would move the optimal mean to about 1.1."""

    action_space = gym.spaces.Box(-3.0, 3.0, (1,), np.float32)
    target = 0.5

    def transition(self, action):
        return np.ones(1), -float((action[0] - self.target) ** 2), True


PROBES = {
    "ProbeConstantReward-v0": ConstantRewardEnv,
    "ProbeObsReward-v0": ObsRewardEnv,
    "ProbeDelayedReward-v0": DelayedRewardEnv,
    "ProbeBandit-v0": BanditEnv,
    "ProbeTarget-v0": TargetEnv,
}


for env_id, env_class in PROBES.items():
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=env_class, max_episode_steps=5)


# ---- Runs, watched and saved: helpers of the tests that run main.


@dataclass
class Run:
    scalars: dict[str, list[float]]
    initial: torch.nn.Module  # the agent as the first rollout found it
    agent: torch.nn.Module  # the agent after the last update
    batches: list[tuple] = field(default_factory=list)  # what each rollout returned
    gae_calls: list[tuple] = field(default_factory=list)  # (rewards, values, next_values, dones, γ, λ, advantages)
    steps: int = 0  # calls of guarded_step


def train(script, monkeypatch, **overrides) -> Run:
    """One batch of 2 envs × 64 steps unless overrides say otherwise, with main watched through spies."""
    run = Run({}, None, None)
    rollout, compute_gae, guarded_step = script.rollout, script.compute_gae, script.guarded_step

    def rollout_spy(envs, agent, *args, **kwargs):
        if run.agent is None:
            run.initial, run.agent = copy.deepcopy(agent), agent
        run.batches.append(rollout(envs, agent, *args, **kwargs))
        return run.batches[-1]

    def compute_gae_spy(*args):
        advantages = compute_gae(*args)
        run.gae_calls.append((*args, advantages.clone()))
        return advantages

    def guarded_step_spy(*args, **kwargs):
        run.steps += 1
        return guarded_step(*args, **kwargs)

    existing = set(Path("runs").glob("*")) if Path("runs").exists() else set()
    with monkeypatch.context() as m:
        m.setattr(script, "rollout", rollout_spy)
        m.setattr(script, "compute_gae", compute_gae_spy)
        m.setattr(script, "guarded_step", guarded_step_spy)
        script.main(tiny_args(script, **{"total_timesteps": 128, **overrides}))
    (folder,) = set(Path("runs").glob("*")) - existing
    run.scalars = read_scalars(folder)
    return run


def initial_agent(script, env_id: str, seed: int = 1):
    """The agent main builds before its first update: the seed, then the first draws of torch's generator."""
    env = gym.make(env_id)
    torch.manual_seed(seed)
    return script.Agent(env.observation_space.shape[0], env.action_space, script.Args().log_std_init)


def saved_checkpoint() -> dict:
    (path,) = Path("runs").glob("*/*.model")
    return torch.load(path, weights_only=True)


def train_and_load(script, **overrides):
    """Trains briefly with --save-model in the current folder; returns the checkpoint, the episodic returns and every
    scalar logged but the SPS."""
    args = tiny_args(script, **{"save_model": True, "total_timesteps": 512, "num_steps": 128, **overrides})
    returns = script.main(args)
    (path,) = Path("runs").glob("*/*.model")
    checkpoint = torch.load(path, weights_only=True)
    scalars = {key: values for key, values in read_scalars(path.parent).items() if key != "charts/SPS"}
    shutil.rmtree("runs")
    return checkpoint, returns, scalars


@pytest.fixture
def saved(in_tmp):
    """A trpo run of 4 iterations with --save-every 2, and one of pg with --save-model only."""
    import pg
    import trpo

    trpo.main(tiny_args(trpo, env_id="Steps-v0", num_steps=16, total_timesteps=128, save_every=2))
    shutil.move(str(only_run()), "trpo-run")
    pg.main(tiny_args(pg, env_id="Steps-v0", num_steps=16, total_timesteps=128, save_model=True))
    shutil.move(str(only_run()), "pg-run")
    return {"trpo": Path("trpo-run/trpo.model"), "pg": Path("pg-run/pg.model")}


# The plumbing is one text in all five scripts (tests/test_shape.py): two of them stand for it where a run is slow.
PLUMBING = ["pg", "trpo"]
