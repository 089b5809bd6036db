"""sb3-contrib TRPO with rl-zoo's Hopper settings, scored by this project's metric: the mean return of the last 100
training episodes. It is the peer that issue "Reach the anchors" asks to run beside trpo.py.

    OMP_NUM_THREADS=1 python benchmarks/sb3_trpo.py --seed 1 --total-timesteps 1000000

rl-zoo's hyperparams/trpo.yml for Hopper: 2 envs × 1024 steps, VecNormalize, γ 0.99, λ 0.95, 20 critic epochs of
minibatch 128 at lr 1e-3, 25 CG iterations, damping 0.1, target KL 0.01.
"""

from dataclasses import dataclass

import numpy as np
import torch
import tyro


@dataclass
class Options:
    env_id: str = "Hopper-v5"
    seed: int = 1
    total_timesteps: int = 1_000_000


def main(options: Options) -> float:
    from sb3_contrib import TRPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    returns = []

    class EpisodeReturns(BaseCallback):
        def _on_step(self) -> bool:
            returns.extend(info["episode"]["r"] for info in self.locals["infos"] if "episode" in info)
            return True

    torch.set_num_threads(1)
    envs = VecNormalize(make_vec_env(options.env_id, n_envs=2, seed=options.seed), gamma=0.99)
    model = TRPO(
        "MlpPolicy", envs, n_steps=1024, batch_size=128, gamma=0.99, gae_lambda=0.95, cg_max_steps=25, cg_damping=0.1,
        n_critic_updates=20, learning_rate=1e-3, target_kl=0.01, seed=options.seed, device="cpu",
    )  # fmt: skip
    model.learn(options.total_timesteps, callback=EpisodeReturns())
    score = float(np.mean(returns[-100:]))
    where = f"{options.env_id} seed {options.seed} at {options.total_timesteps:,} steps"
    print(f"sb3-contrib TRPO {where}: mean of the last 100 of {len(returns)} episodes {score:.1f}")
    return score


if __name__ == "__main__":
    main(tyro.cli(Options))
