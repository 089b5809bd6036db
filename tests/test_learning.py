"""Each script learns: the probe environments at a fixed budget, one pixel, and the classic and MuJoCo tasks with fixed
seeds, budgets far below the defaults and thresholds with a wide margin."""

import dataclasses
import importlib
import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TargetEnv, only_run

# script, env, total steps, threshold on the mean of the last 20 episodes. The comments give what the seeds reached
# with OMP_NUM_THREADS=1, marked † where measured on another CPU than the rest (its rounding differs, and so do its
# runs); the untrained policy of seed 1 averages 20.8 on CartPole and −1393.8 on Pendulum.
CASES = [
    ("pg", "CartPole-v1", 30_000, 150),  # seeds 1, 2: 404.7†, 444.8† (449.6, 408.6 at 40,000)
    ("npg", "CartPole-v1", 60_000, 300),  # seed 1: 500.0 at λ 0.95 (496.3 at 0.97; 458.6 at 4 × 256, ½·sᵀFs = δ)
    ("trpo", "CartPole-v1", 60_000, 300),  # seed 1: 500.0 at 2 × 1024 (460.5 at 4 × 512; 322.8 there at 45,000)
    ("ppo_clip", "CartPole-v1", 40_000, 300),  # seed 1: 475.1 at 1 × 2048 (467.9 at the 4 × 512 of before)
    ("ppo_kl", "CartPole-v1", 50_000, 300),  # seed 1: 500.0 at 1 × 2048 (333.3 at 40,000; 444.0 there at 4 × 512)
    ("pg", "Pendulum-v1", 100_000, -1100),  # seeds 1, 2: −906.5, −942.9, with benchmarks/hyperparams.toml's 1e-2
    ("npg", "Pendulum-v1", 60_000, -700),  # seed 1: −213.1 at 4 × 256, λ 0.95 (−395.7 at λ 0.97)
    ("trpo", "Pendulum-v1", 60_000, -700),  # seeds 1, 2: −374.2, −215.0 at 4 × 256, λ 0.95 (−535.2, −188.3 at 0.97)
    ("ppo_clip", "Pendulum-v1", 70_000, -900),  # seed 1: −641.9 (4 × 512, seeds 1, 2: −555.5, −795.8), lr 1e-3
    ("ppo_kl", "Pendulum-v1", 70_000, -900),  # seed 1: −475.9 (4 × 512, seeds 1, 2: −433.4, −579.3), 1e-3
]


# pg's is the benchmarks' own override (benchmarks/hyperparams.toml): its one Adam step per batch at the default 5e-3
# barely moves on Pendulum-v1 in this budget. PPO's 1e-3 is rl-zoo's Pendulum-v1 setting, used here to halve the
# test's time: at the default 3e-4 (and log σ 0 and 4 × 512, the defaults of then), ppo_clip and ppo_kl needed 100,000
# steps (seed 1: −244.0 and −595.8); at 50,000 they were still near −1000 (−962.0, −1018.4 and −993.6, −1030.6, seeds
# 1, 2).
# trpo's 4 × 256 is its table's there too: at 4 × 512 (its default from issue 37's screens to session 11's 2 × 1024),
# half the updates, seed 1 had −642.6 at 60,000; npg at 4 × 512 (its default since issue 37) −684.7, too near the
# threshold.
OVERRIDES = {
    ("pg", "Pendulum-v1"): dict(learning_rate=1e-2),
    ("npg", "Pendulum-v1"): dict(num_steps=256),
    ("trpo", "Pendulum-v1"): dict(num_envs=4, num_steps=256),
    ("ppo_clip", "Pendulum-v1"): dict(learning_rate=1e-3),
    ("ppo_kl", "Pendulum-v1"): dict(learning_rate=1e-3),
}


@pytest.mark.slow
@pytest.mark.parametrize("name, env_id, total_timesteps, threshold", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_learns(name, env_id, total_timesteps, threshold, in_tmp):
    script = importlib.import_module(name)
    overrides = OVERRIDES.get((name, env_id), {})
    returns = script.main(script.Args(env_id=env_id, total_timesteps=total_timesteps, seed=1, **overrides))
    mean = np.mean(returns[-20:])
    print(f"{name} {env_id} {total_timesteps}: mean of the last 20 episodes {mean:.1f}")
    assert mean >= threshold


# ---- Probes: the smallest env that isolates one part of the agent (conftest.py holds them)


def trained(script, env_id: str, **overrides):
    """Trains on env_id with --save-model in the current folder, then rebuilds the saved agent from the checkpoint.
    Returns the agent and a function that turns raw observations into the normalised ones the agent was trained on."""
    script.main(script.Args(env_id=env_id, seed=1, save_model=True, **overrides))
    (path,) = only_run().glob("*.model")
    checkpoint = torch.load(path, weights_only=True)
    saved = checkpoint["args"]
    agent = script.Agent(1, gym.make(env_id).action_space)
    agent.load_state_dict(checkpoint["agent"])
    normalizer = script.Normalizer(1, 1, saved["gamma"], saved["norm_obs"], saved["norm_reward"])
    normalizer.load_state_dict(checkpoint["normalizer"])

    def observe(*raw):
        obs = normalizer.obs(np.array(raw, dtype=np.float64).reshape(-1, 1), update=False)
        return torch.as_tensor(obs, dtype=torch.float32)

    return agent, observe


# What each probe measures, with its true value. Reward normalisation is off by default for the Discrete-action
# probes, so the critic's values are in the env's own units; for the Box-action target it is on, and only μ is judged.
def values_of_constant_reward(agent, observe):
    return {"V(1)": (agent.value(observe(1.0)).item(), 1.0)}


def values_of_obs_reward(agent, observe):
    values = agent.value(observe(1.0, -1.0))
    return {"V(1)": (values[0].item(), 1.0), "V(−1)": (values[1].item(), -1.0)}


def values_of_delayed_reward(agent, observe):
    values = agent.value(observe(0.0, 1.0))
    return {"V(0)": (values[0].item(), 0.5), "V(1)": (values[1].item(), 1.0)}  # γ·1 and 1, with γ = 0.5


def good_arm_probability(agent, observe):
    return {"P(a = 1)": (agent.dist(observe(1.0)).probs[0, 1].item(), 1.0)}


def gaussian_mean(agent, observe):
    return {"μ": (agent.dist(observe(1.0)).mean.item(), TargetEnv.target)}


# probe: env id, what to measure, the margin, and the arguments; every other argument is the script's default.
# Each value probe takes 4,096 steps (two updates of ppo's default batch of 2,048; after one the delayed probe's V(0)
# is still 0.02 off for ppo). The policy probes take 10,000 and 14,000 steps: at 10,000 steps trpo's μ was 0.37 (at δ
# 0.02). pg makes one Adam step per batch, which is why its default batch is 4 × 128 = 512 (with 4 × 512, 10,000 steps
# are 4 updates, which move P(a = 1) only from 0.5 to 0.56); npg and trpo move the policy by a KL of at most δ = 0.01
# per batch (trpo 0.02 on the bandit's Discrete actions). Their default batch is 2,048 since issue 37's screens (npg
# 4 × 512; trpo 4 × 512, then 2 × 1024 since session 11): the probes, which test the wiring, not the batch, give them
# 4 × 256 (at 4 × 512 the bandit's 4 updates reached P(a = 1) = 0.8537 for trpo, 0.7611 for npg). The values in the
# comments are what seed 1 reached here with OMP_NUM_THREADS=1.
PROBE_BATCH = {"npg": dict(num_steps=256), "trpo": dict(num_envs=4, num_steps=256)}
PROBES_AND_BUDGETS = {
    # V(1) = 1.0000 (every script)
    "constant reward": ("ProbeConstantReward-v0", values_of_constant_reward, 0.05, dict(total_timesteps=4096)),
    # V(±1) = ±1.0000 (every script)
    "obs reward": ("ProbeObsReward-v0", values_of_obs_reward, 0.05, dict(total_timesteps=4096)),
    # γ = 0.5, not the default 0.99: a V(0) of γ must be told apart from the undiscounted 1 by more than the margin.
    # V(0), V(1) = 0.5000, 1.0000 (every script)
    "delayed reward": ("ProbeDelayedReward-v0", values_of_delayed_reward, 0.05, dict(total_timesteps=4096, gamma=0.5)),
    # P(a = 1) = 0.9853 (pg), 0.9659 (npg), 0.9995 (trpo), 0.9971 (ppo_clip), 0.9763 (ppo_kl)
    "bandit": ("ProbeBandit-v0", good_arm_probability, 0.1, dict(total_timesteps=10_000)),
    # μ = 0.53 (pg), 0.45 (npg), 0.41 (trpo; both δ 0.01 on one dimension), 0.46 (ppo_clip and ppo_kl at 1 × 2048;
    # 0.48 and 0.49 at 4 × 512); at 20,000 steps 0.47 to 0.50
    "target": ("ProbeTarget-v0", gaussian_mean, 0.15, dict(total_timesteps=14_000)),
}


BUDGET = 50_000


@pytest.mark.slow
@pytest.mark.parametrize("probe", PROBES_AND_BUDGETS)
def test_probe(script, probe, in_tmp):
    env_id, measure, margin, overrides = PROBES_AND_BUDGETS[probe]
    assert overrides["total_timesteps"] <= BUDGET
    agent, observe = trained(script, env_id, **PROBE_BATCH.get(script.__name__, {}), **overrides)
    with torch.no_grad():
        measured = measure(agent, observe)
    print(
        f"{script.__name__} {probe}: "
        + ", ".join(f"{k} = {v:.4f} (want {t} ± {margin})" for k, (v, t) in measured.items())
    )
    for name, (value, target) in measured.items():
        assert abs(value - target) < margin, f"{name} = {value:.4f}, want {target} ± {margin}"


# ---- Pixels


# Per script, the budget and overrides that learn Pixel-v0 here, with few critic steps: the pixel tests' time goes here.
# The PPO scripts' π and V share one encoder, whose Adam steps the value loss's gradient dominates at first: at 3e-4
# they learn it in 2,048 steps, at 1e-3 in 1,024.
PIXEL_RUNS = {
    "pg": dict(total_timesteps=4096, num_steps=64, vf_iters=1, num_minibatches=4),
    "npg": dict(total_timesteps=3072, num_steps=64, target_kl=0.05, vf_iters=1, num_minibatches=4),
    "trpo": dict(total_timesteps=3072, num_steps=64, target_kl=0.05, vf_iters=1, num_minibatches=4),
    "ppo_clip": dict(total_timesteps=1024, num_steps=64, update_epochs=4, num_minibatches=4, learning_rate=1e-3),
    "ppo_kl": dict(total_timesteps=1024, num_steps=64, update_epochs=4, num_minibatches=4, learning_rate=1e-3),
}


@pytest.mark.slow  # a learning run: 1,024 to 4,096 steps through the NatureCNN
def test_every_script_learns_to_read_one_pixel(script, in_tmp, monkeypatch):
    """Pixel-v0 pays 1 for reading one pixel of a 36 × 36 image, 0.5 on average for not reading it. The training
    episodes start near 0.5, and the deterministic policy ends right on 95 of 100 or more (a constant action: 50)."""
    evaluations, evaluate = [], script.evaluate
    monkeypatch.setattr(script, "evaluate", lambda *a: evaluations.append(evaluate(*a)) or evaluations[-1])
    args = script.Args(env_id="Pixel-v0", seed=1, num_envs=4, save_model=True, eval_episodes=100)
    returns = script.main(dataclasses.replace(args, **PIXEL_RUNS[script.__name__]))
    assert np.mean(returns[:100]) < 0.6 and np.mean(evaluations[0]) >= 0.95, (returns[:100], evaluations)
