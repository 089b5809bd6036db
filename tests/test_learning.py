"""Each script learns, with fixed seeds and budgets far below its default, and thresholds with a wide margin.

The margins allow for another CPU or torch thread count in CI: either changes floating-point rounding, and so the run.
benchmarks/results/ holds what the default budgets reach."""

import importlib

import numpy as np
import pytest

# script, env, total steps, threshold on the mean of the last 20 episodes. The comments give what the seeds reached
# with OMP_NUM_THREADS=1, marked † where measured on another CPU than the rest (its rounding differs, and so do its
# runs); the untrained policy of seed 1 averages 20.8 on CartPole and −1393.8 on Pendulum.
CASES = [
    ("pg", "CartPole-v1", 30_000, 150),  # seeds 1, 2: 404.7†, 444.8† (449.6, 408.6 at 40,000)
    ("npg", "CartPole-v1", 60_000, 300),  # seed 1: 500.0
    ("trpo", "CartPole-v1", 45_000, 300),  # seeds 1, 2: 488.7†, 500.0† (seed 1: 500.0 at 60,000)
    ("ppo_clip", "CartPole-v1", 40_000, 300),  # seed 1: 453.6 (500.0 at 60,000)
    ("ppo_kl", "CartPole-v1", 40_000, 300),  # seed 1: 443.2 (470.3 at 60,000)
    ("pg", "Pendulum-v1", 100_000, -1100),  # seeds 1, 2: −906.5, −942.9, with benchmarks/hyperparams.toml's 1e-2
    ("npg", "Pendulum-v1", 60_000, -700),  # seeds 1, 2: −172.0, −165.2
    ("trpo", "Pendulum-v1", 60_000, -700),  # seeds 1, 2: −179.8, −248.4
    ("ppo_clip", "Pendulum-v1", 50_000, -900),  # seeds 1, 2: −219.8, −534.9, at a learning rate of 1e-3
    ("ppo_kl", "Pendulum-v1", 50_000, -900),  # seeds 1, 2: −451.3, −391.1, at 1e-3
]

# pg's is the benchmarks' own override (benchmarks/hyperparams.toml): its one Adam step per batch at the default 5e-3
# barely moves on Pendulum-v1 in this budget. PPO's 1e-3 is rl-zoo's Pendulum-v1 setting, used here to halve the
# test's time: at the default 3e-4, ppo_clip and ppo_kl need 100,000 steps (seed 1: −244.0 and −595.8); at 50,000
# they are still near −1000 (−962.0, −1018.4 and −993.6, −1030.6, seeds 1, 2).
OVERRIDES = {
    ("pg", "Pendulum-v1"): dict(learning_rate=1e-2),
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
