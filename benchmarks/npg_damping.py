"""How far npg's step overshoots δ at a given CG damping: on the first batch of a run (npg's Atari settings, a fresh
agent), the natural step s is computed with F from every k-th state and damping λ, and its KL is measured over the
whole batch. ½·sᵀFs ≤ ½·sᵀ(F + λI)s = δ is a quadratic model of that KL; npg takes s whatever the measured KL, as it
has no line search. (hyperparams.toml's figures were measured when s was sized by ½·sᵀFs = δ.)

    OMP_NUM_THREADS=1 python benchmarks/npg_damping.py --env-id ALE/Breakout-v5 --seeds 1 2 3

About 30 s per seed on one thread. hyperparams.toml cites its output for npg's Atari damping."""

import os
import sys
from dataclasses import dataclass, field

import torch
import tyro
from torch.distributions import kl_divergence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import npg  # noqa: E402


@dataclass
class Args:
    env_id: str = "ALE/Breakout-v5"
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    dampings: list[float] = field(default_factory=lambda: [1e-3, 0.1])
    subsamples: list[int] = field(default_factory=lambda: [5, 1])
    target_kl: float = 1e-3  # δ, npg's Atari setting
    num_envs: int = 8
    num_steps: int = 64


def first_steps(args: Args, seed: int) -> dict[tuple[int, float], float]:
    """{(k, λ): measured KL / δ} for the natural step on seed's first batch, as npg's update computes it."""
    run = npg.Args(env_id=args.env_id, seed=seed, num_envs=args.num_envs, num_steps=args.num_steps, norm_obs=False,
                   norm_reward=False, gamma=0.98, gae_lambda=1.0)  # fmt: skip
    torch.manual_seed(seed)
    envs = npg.make_env(args.env_id, args.num_envs)
    agent, normalizer = npg.build(run, envs, torch.device("cpu"))
    first_obs = normalizer.obs_tensor(envs.reset(seed=seed)[0], torch.device("cpu"))
    batch = npg.make_batch(agent, npg.rollout(envs, agent, normalizer, first_obs, args.num_steps), 0.98, 1.0)
    envs.close()
    advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std().nan_to_num() + 1e-8)
    params = agent.policy_parameters()
    theta_old = torch.nn.utils.parameters_to_vector(params).detach()
    g = npg.flat_grad(npg.surrogate(agent.dist(batch.obs).log_prob(batch.actions), batch.logprobs, advantages), params)
    ratios = {}
    for k in args.subsamples:
        fisher_obs = batch.obs[::k]
        for damping in args.dampings:  # F at θ_old each time: set_flat_params moves θ in place
            fvp = npg.fisher_vector_product(agent, fisher_obs)
            step, _ = npg.natural_gradient_step(g, fvp, args.target_kl, 10, damping)
            npg.set_flat_params(params, theta_old + step)
            with torch.no_grad():
                ratios[k, damping] = kl_divergence(batch.old_dist, agent.dist(batch.obs)).mean().item() / args.target_kl
            npg.set_flat_params(params, theta_old)
    return ratios


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(1)
    print(f"{args.env_id}, δ = {args.target_kl}: the first natural step's measured KL over the batch, in units of δ")
    for seed in args.seeds:
        ratios = first_steps(args, seed)
        print(f"seed {seed}: " + " | ".join(f"F every {k}, λ = {d:g}: {r:.2f}" for (k, d), r in ratios.items()))
