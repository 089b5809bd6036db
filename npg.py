"""Natural policy gradient: the steepest ascent direction in the geometry of the policy's KL divergence.

    maximise  L(θ) = Ê[πθ(a|s)/π_old(a|s) · Â]   subject to   Ê[KL(π_old(·|s) ‖ πθ(·|s))] ≤ δ

Taken to first order in L and second order in the KL (whose Hessian at θ_old is the Fisher matrix F), the problem has
a closed-form solution; with F damped to F + λI, which keeps conjugate gradient well conditioned, it is θ ← θ_old + s,

    g = ∇L(θ_old),   x ≈ (F + λI)⁻¹g  (conjugate gradient on products (F + λI)·v),   s = √(2δ / xᵀ(F + λI)x) · x,

so ½·sᵀ(F + λI)s = δ, and the KL to second order, ½·sᵀFs, is at most δ: the damping shortens the step too, as OpenAI
Baselines', Spinning Up's and sb3-contrib's TRPO size it.

Kakade 2002, "A Natural Policy Gradient"; the constrained form is from Schulman et al. 2015, "Trust Region Policy
Optimization". Â is GAE(γ, λ) (Schulman et al. 2016); the critic V is a separate network fitted by minibatch Adam.
npg.py is pg.py with the Adam step on the policy replaced by the natural gradient step; trpo.py is npg.py plus a
backtracking line search on s. `diff npg.py trpo.py` shows the line search, trpo's own δ for Discrete actions and its
default batch (npg 4 × 512, trpo 2 × 1024).

    python npg.py --env-id Hopper-v5 --save-model  # without --env-id: CartPole-v1
"""

import contextlib
import copy
import dataclasses
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch.autograd import forward_ad
from torch.distributions import Categorical, Independent, Normal, kl_divergence
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment, used in the run folder's name"""
    seed: int = 1
    """seed of the experiment; a CPU run is reproducible bit for bit"""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda or mps"""
    capture_video: bool = False
    """whether to record env 0's episodes to `videos/{run_name}` (needs moviepy and the env's renderer)"""
    save_model: bool = False
    """whether to save the weights, normalisation statistics and arguments to the run folder, then evaluate them"""
    eval_checkpoint: str | None = None
    """a saved model to evaluate instead of training; the env and the agent are rebuilt from its saved arguments"""
    eval_episodes: int = 10
    """episodes of the deterministic policy per evaluation, each cut at the env's time limit (or 1,000 steps)"""
    save_every: int | None = None
    """write the checkpoint every this many iterations (and at the end), with what --resume needs; None: never"""
    resume: str | None = None
    """a checkpoint written with --save-every: training continues from it, in its run folder, with its arguments"""

    env_id: str = "CartPole-v1"
    """the id of the gymnasium environment"""
    total_timesteps: int = 500_000
    """total environment steps, summed over the envs"""
    num_envs: int = 4
    """the number of parallel environments"""
    num_steps: int = 512
    """the number of steps per env per policy update; the batch is num_envs · num_steps"""
    target_kl: float | None = None
    """δ: the step is sized so that ½·sᵀ(F + λI)s = δ, which bounds the KL to second order; None: 0.01 for Discrete
    actions, and for Box actions 0.01 per dimension (Humanoid-v5, 17: 0.17), so that many σ may fall as fast as a few"""
    cg_iters: int = 10
    """conjugate-gradient iterations for x ≈ (F + λI)⁻¹g"""
    cg_damping: float | None = None
    """λ in (F + λI)·v, which keeps CG well conditioned and the step short in θ; None: 0.1 for Discrete actions, and
    for Box actions 0.1 per dimension, sb3-contrib's δ and λ for a KL taken as the mean over the dimensions"""
    fisher_subsample: int = 1
    """F is estimated on every k-th state of the batch, so a product F·v costs 1/k (OpenAI Baselines' TRPO: 5)"""
    gamma: float = 0.99
    """the discount factor γ"""
    gae_lambda: float = 0.95
    """the GAE λ; 1 gives Monte-Carlo returns minus the baseline"""
    vf_learning_rate: float = 1e-3
    """Adam's learning rate for the value network"""
    vf_iters: int = 5
    """epochs of minibatch Adam on the value network per batch"""
    num_minibatches: int = 16
    """minibatches per value epoch"""
    norm_obs: bool | None = None
    """normalise observations by running mean and std; None means on for Box actions, off otherwise"""
    norm_reward: bool | None = None
    """scale rewards by the running std of the discounted return; None means on for Box actions, off otherwise"""
    log_std_init: float = -0.5
    """the Gaussian's initial log σ, the same for every action dimension (Box actions only)"""

    def rules(self) -> dict[str, tuple[bool, str]]:
        """Each flag's range, as check_args applies it before anything runs: whether the value is in it, and the
        range in words. A flag that may be None (off, or chosen by main) passes with it."""
        batch = self.num_envs * self.num_steps
        positive = ["total_timesteps", "num_envs", "num_steps", "eval_episodes", "save_every", "vf_learning_rate"]
        positive += ["vf_iters", "target_kl", "cg_iters", "cg_damping", "fisher_subsample"]
        rules = {name: (getattr(self, name) is None or getattr(self, name) > 0, "positive") for name in positive}
        rules["gamma"] = (0 < self.gamma <= 1, "in (0, 1]")
        rules["gae_lambda"] = (0 <= self.gae_lambda <= 1, "in [0, 1]")
        rules["log_std_init"] = (math.isfinite(self.log_std_init), "finite")
        rules["num_minibatches"] = (0 < self.num_minibatches <= batch, f"in [1, {batch}], the batch size")
        devices = {"auto": True, "cpu": True, "cuda": torch.cuda.is_available()}
        devices["mps"] = torch.backends.mps.is_available()
        here = ", ".join(name for name, ok in devices.items() if ok)
        rules["device"] = (devices.get(self.device), f"one of {here} here")
        return rules


def linear(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    """A linear layer with orthogonal weights scaled by gain and zero biases (Huang et al. 2022)."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, out_dim: int, gain: float) -> nn.Sequential:
    """in_dim → 64 → 64 → out_dim with tanh between, initialised orthogonally; gain scales the output layer."""
    hidden = [linear(in_dim, 64, np.sqrt(2)), nn.Tanh(), linear(64, 64, np.sqrt(2)), nn.Tanh()]
    return nn.Sequential(*hidden, linear(64, out_dim, gain))


class NatureCNN(nn.Module):
    """A uint8 image of shape (C, H, W), or (H, W, C) where the last axis is the shorter end, to 512 features: the
    Nature DQN encoder (Mnih et al. 2015), 32 8×8 filters with stride 4, 64 4×4 with stride 2, 64 3×3 with stride 1 and
    512 units, ReLU after each, on pixels scaled to [0, 1], initialised orthogonally. Any leading dims, as the MLP
    allows: (T, N, …) as well as (B, …)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.channels_last = shape[-1] < shape[0]
        channels, height, width = (shape[-1], *shape[:2]) if self.channels_last else shape
        convs = [nn.Conv2d(channels, 32, 8, stride=4), nn.Conv2d(32, 64, 4, stride=2), nn.Conv2d(64, 64, 3, stride=1)]
        for conv in convs:
            nn.init.orthogonal_(conv.weight, np.sqrt(2))
            nn.init.zeros_(conv.bias)
        with torch.no_grad():
            flat = nn.Sequential(*convs)(torch.zeros(1, channels, height, width)).numel()
        layers = [convs[0], nn.ReLU(), convs[1], nn.ReLU(), convs[2], nn.ReLU(), nn.Flatten()]
        self.net = nn.Sequential(*layers, linear(flat, 512, np.sqrt(2)), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.reshape(-1, *obs.shape[-3:])
        x = x.permute(0, 3, 1, 2) if self.channels_last else x  # (B, C, H, W)
        x = x.contiguous(memory_format=torch.channels_last)  # stored (B, H, W, C): a PPO update runs ~25% faster on CPU
        x = x.to(torch.float32, copy=True).div_(255.0)  # scaled in place: one float copy of the frames, not two
        return self.net(x).reshape(*obs.shape[:-3], -1)


class Agent(nn.Module):
    """The actor πθ(a|s) and the critic V(s): two separate tanh MLPs with 64 × 64 hidden units, or on an image two
    separate NatureCNNs with a linear head each. Separate even there, at the cost of a second encoder: θ is then the
    actor alone, so the critic's regression never moves π, and npg's and trpo's trust region, and every script's KL,
    sees all of π's change. (The PPO scripts' Agent shares one encoder on images.)

    obs_dim: the size of a flat observation, or the shape of an image."""

    def __init__(self, obs_dim: int | tuple[int, ...], action_space: gym.Space, log_std_init: float = 0.0):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        act_dim = action_space.shape[0] if self.continuous else action_space.n
        if isinstance(obs_dim, int):
            self.critic, self.actor = mlp(obs_dim, 1, gain=1.0), mlp(obs_dim, act_dim, gain=0.01)
        else:
            self.critic = nn.Sequential(NatureCNN(obs_dim), linear(512, 1, gain=1.0))
            self.actor = nn.Sequential(NatureCNN(obs_dim), linear(512, act_dim, gain=0.01))
        if self.continuous:
            self.actor_logstd = nn.Parameter(torch.full((act_dim,), log_std_init))

    def policy_parameters(self) -> list[nn.Parameter]:
        """θ: the actor's weights and, for a Gaussian, its log σ."""
        return [p for name, p in self.named_parameters() if not name.startswith("critic.")]

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return self.policy(self.actor(obs))

    def dist_and_value(self, obs: torch.Tensor) -> tuple[torch.distributions.Distribution, torch.Tensor]:
        return self.dist(obs), self.value(obs)

    def policy(self, out: torch.Tensor) -> torch.distributions.Distribution:
        """πθ(·|s) from the actor's output: Categorical(softmax(logits)), or N(μθ(s), diag(σ²)) with a state-independent
        log σ. Argument validation is off: checking every sample against the support costs a seventh of a rollout."""
        if self.continuous:
            normal = Normal(out, self.actor_logstd.exp(), validate_args=False)
            return Independent(normal, 1, validate_args=False)
        return Categorical(logits=out, validate_args=False)


def compute_gae(rewards, values, next_values, dones, gamma: float, gae_lambda: float) -> torch.Tensor:
    """Â_t = Σ_l (γλ)^l δ_{t+l} with δ_t = r_t + γ·V(s_{t+1}) − V(s_t), for (T, N) tensors, each column one env.

    The caller passes next_values[t] = V of the true successor of step t: 0 if the episode terminated there,
    V(info["final_obs"]) if it was truncated, else V(obs[t + 1]). dones[t] (terminated or truncated) ends the sum, so
    Â_t never reaches into the next episode."""
    advantages = torch.zeros_like(rewards)
    advantage = torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] - values[t]  # δ_t = r_t + γV(s_{t+1}) − V(s_t)
        advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * advantage  # Â_t = δ_t + γλ·Â_{t+1}
        advantages[t] = advantage
    return advantages


class Batch(NamedTuple):
    """One rollout flattened to B = num_envs · num_steps samples: what update() learns from."""

    obs: torch.Tensor  # (B, obs_dim)
    actions: torch.Tensor  # (B,) or (B, act_dim)
    logprobs: torch.Tensor  # (B,) log π_old(a|s)
    advantages: torch.Tensor  # (B,) Â, not normalised
    returns: torch.Tensor  # (B,) R̂ = Â + V(s), the critic's targets
    values: torch.Tensor  # (B,) V(s) before the update
    old_dist: torch.distributions.Distribution  # π_old(·|s) over the B states, for the exact KL


def make_batch(agent: Agent, data, gamma: float, gae_lambda: float) -> Batch:
    """Â and R̂ of a Rollout, flattened, with π_old. V(s_{t+1}) is 0 after a termination only: after a truncation (a
    time limit) it is V(final obs). Elsewhere s_{t+1} is the next step's s, whose V is reused, not computed again."""
    obs = data.obs.flatten(0, 1)
    with torch.no_grad():
        old_dist, values = agent.dist_and_value(obs)  # π_old and V(s), from one pass where π and V share an encoder
        values = values.view_as(data.rewards)
        next_values = torch.cat([values[1:], agent.value(data.last_obs)[None]])  # V(s_{t+1}) = V(s) of step t + 1
        ended = data.dones.bool()  # there the env has reset: s_{t+1} is the episode's final obs, data.next_obs
        if ended.any():
            next_values[ended] = agent.value(data.next_obs[ended])
        next_values = next_values * (1.0 - data.terminations)  # 0 after termination
    advantages = compute_gae(data.rewards, values, next_values, data.dones, gamma, gae_lambda)
    returns = advantages + values
    flat = (x.flatten(0, 1) for x in (data.actions, data.logprobs, advantages, returns, values))
    return Batch(obs, *flat, old_dist)


def flat_grad(y: torch.Tensor, params: list[nn.Parameter], **kwargs) -> torch.Tensor:
    """∂y/∂θ, flattened into one vector."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, **kwargs)])


def set_flat_params(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    """θ ← flat, copied in place, so that writing back a saved θ_old restores it bit for bit."""
    with torch.no_grad():
        for p, chunk in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.copy_(chunk.view_as(p))


def surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """L(θ) = Ê[πθ(a|s)/π_old(a|s) · Â] from log πθ(a|s) and log π_old(a|s); at θ = θ_old, ∇L is the policy gradient."""
    return (torch.exp(logprobs - old_logprobs) * advantages).mean()


def fisher_vector_product(agent: Agent, obs: torch.Tensor):
    """v ↦ F·v, where F = ∇²θ Ê[KL(π_old ‖ πθ)] at θ = θ_old is the Fisher matrix over the states obs, a flat batch
    (B, …), never formed. Built at θ_old, from θ_old's values; valid only while θ stays there.

    Let z = actor(s) be the actor's output (the logits, or the Gaussian's mean μ) and J = ∂z/∂w, w the actor's weights.
    One state's KL has the Hessian Jᵀ·H·J + Σ (∂KL/∂z)·∂²z/∂w² in w, whose second term vanishes at θ_old, where
    ∂KL/∂z = 0: so F's block on w is Jᵀ·H·J averaged over the states, where H, the Hessian of one state's KL in z (the
    Fisher matrix of the distribution), is built from θ_old's values and held fixed: H·u = p ⊙ u − p·(pᵀu) for
    Categorical(softmax(z)) with probabilities p, and u / σ² for N(z, diag(σ²)). A Gaussian's log σ is no part of z:
    its block of F is 2·I, and the blocks between it and w are 0. Each product is J·v in one forward-mode pass and
    Jᵀ·(H·J·v) in one backward pass: on an image encoder cheaper than differentiating ∇θ KL a second time (double
    backward), on a small MLP a little dearer; the result is the same F·v to float rounding."""
    names = [name for name, _ in agent.named_parameters() if not name.startswith("critic.")]  # θ's order
    sizes = [p.numel() for p in agent.policy_parameters()]
    weights = dict(agent.actor.named_parameters())
    z = agent.actor(obs)  # its graph serves every product's backward pass, Jᵀ·u
    if agent.continuous:
        inv_var = torch.exp(-2 * agent.actor_logstd.detach())  # 1 / σ²

        def fisher_in_z(u: torch.Tensor) -> torch.Tensor:
            return u * inv_var

    else:
        probs = torch.softmax(z.detach(), -1)

        def fisher_in_z(u: torch.Tensor) -> torch.Tensor:
            return probs * u - probs * (probs * u).sum(-1, keepdim=True)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        chunks = dict(zip(names, v.split(sizes), strict=True))
        with forward_ad.dual_level():  # J·v: z's derivative along v, forward mode
            duals = {k: forward_ad.make_dual(w.detach(), chunks[f"actor.{k}"].view_as(w)) for k, w in weights.items()}
            jv = forward_ad.unpack_dual(torch.func.functional_call(agent.actor, duals, (obs,))).tangent
        jt_u = torch.autograd.grad(z, list(weights.values()), fisher_in_z(jv) / len(z), retain_graph=True)  # Jᵀ·u
        grads = {f"actor.{k}": g.reshape(-1) for k, g in zip(weights, jt_u, strict=True)}
        return torch.cat([2 * chunks[name] if name == "actor_logstd" else grads[name] for name in names])

    return fvp


def conjugate_gradient(Avp, b: torch.Tensor, iters: int, tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """x ≈ A⁻¹b for a symmetric positive-definite A known only through products Avp(p) = A·p (Hestenes & Stiefel
    1952). Stops after `iters` iterations or once ‖r‖² < tol. Returns x and the residual ‖b − Ax‖."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()  # r = b − Ax at x = 0
    rr = r @ r
    for _ in range(iters):
        if rr < tol:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)  # α = rᵀr / pᵀAp
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p  # β = r'ᵀr' / rᵀr keeps p A-conjugate to the earlier directions
        rr = rr_new
    return x, rr.sqrt()


def default_target_kl(action_space: gym.Space) -> float:
    """Args.target_kl's None. A KL summed over d dimensions gives each about δ/d: one δ for all lets few σ fall fast."""
    return 0.01 * action_space.shape[0] if isinstance(action_space, gym.spaces.Box) else 0.01


def default_cg_damping(action_space: gym.Space) -> float:
    """Args.cg_damping's None. F of a KL summed over d dimensions is d times F of their mean, sb3-contrib's KL: 0.1·d
    is its λ = 0.1, as 0.01·d is its δ = 0.01."""
    return 0.1 * action_space.shape[0] if isinstance(action_space, gym.spaces.Box) else 0.1


def natural_gradient_step(g: torch.Tensor, fvp, target_kl: float, cg_iters: int, damping: float):
    """s = √(2δ / xᵀ(F + λI)x) · x with x ≈ (F + λI)⁻¹g: the step that maximises gᵀs subject to ½·sᵀ(F + λI)s = δ,
    for fvp(v) = F·v.
    Returns s and the CG residual. A zero gradient gives x = 0 and s = 0."""
    damped_fvp = lambda v: fvp(v) + damping * v  # noqa: E731  (F + λI)·v
    x, residual = conjugate_gradient(damped_fvp, g, cg_iters)
    return torch.sqrt(2 * target_kl / (x @ damped_fvp(x)).clamp_min(1e-12)) * x, residual  # s = √(2δ/xᵀ(F + λI)x)·x


def guarded_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float = math.inf) -> bool:
    """One optimizer step on loss, its gradient's global norm clipped to max_grad_norm, unless the loss or the gradient
    is not finite: then no parameter moves, and the result is False."""
    optimizer.zero_grad()
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    if not torch.isfinite(loss + grad_norm):
        return False
    optimizer.step()
    return True


def shared_metrics(batch: Batch, new_dist, new_values: torch.Tensor) -> dict:
    """What every script logs after its update, over the whole batch: the value loss (V(s) − R̂)² of the new values,
    the entropy of the new policy new_dist, and the fraction of the returns' variance that V explained before the
    update (NaN if the returns do not vary)."""
    value_loss = ((new_values - batch.returns) ** 2).mean()
    var = batch.returns.var()
    explained_var = 1 - (batch.returns - batch.values).var() / var if var > 0 else math.nan
    entropy = new_dist.entropy().mean()
    return {"losses/value_loss": value_loss, "losses/entropy": entropy, "losses/explained_variance": explained_var}


def update(agent: Agent, value_optimizer: torch.optim.Optimizer, batch: Batch, args: Args) -> dict:
    """The natural gradient step θ ← θ_old + s on the policy, then the critic, which change the agent in place.
    Returns the metrics to log, each over the whole batch with the new parameters."""
    advantages = batch.advantages  # normalised; nan_to_num: the std of one sample is NaN, and its Â is then 0
    advantages = (advantages - advantages.mean()) / (advantages.std().nan_to_num() + 1e-8)
    params = agent.policy_parameters()
    theta_old = nn.utils.parameters_to_vector(params).detach()

    def objective() -> tuple[torch.Tensor, torch.Tensor]:  # L(θ) and Ê[KL(π_old ‖ πθ)], from one forward pass
        dist = agent.dist(batch.obs)
        kl = kl_divergence(batch.old_dist, dist).mean()
        return surrogate(dist.log_prob(batch.actions), batch.logprobs, advantages), kl

    surrogate_old, _ = objective()
    g = flat_grad(surrogate_old, params)
    fvp = fisher_vector_product(agent, batch.obs[:: args.fisher_subsample])  # F from every k-th state: cheaper, noisier
    step, cg_residual = natural_gradient_step(g, fvp, args.target_kl, args.cg_iters, args.cg_damping)
    skipped = int(not torch.isfinite(step).all())  # a non-finite loss or gradient: θ stays θ_old
    if not skipped:
        set_flat_params(params, theta_old + step)  # θ ← θ_old + s
    for _ in range(args.vf_iters):  # the critic: a few epochs of minibatch Adam on (V(s) − R̂)²
        for mb in torch.randperm(len(batch.obs), device=batch.obs.device).tensor_split(args.num_minibatches):
            value_loss = ((agent.value(batch.obs[mb]) - batch.returns[mb]) ** 2).mean()
            skipped += not guarded_step(value_optimizer, value_loss)
    with torch.no_grad():  # π is final: the critic's steps move only V
        new_dist, new_values = agent.dist_and_value(batch.obs)
        surrogate_new = surrogate(new_dist.log_prob(batch.actions), batch.logprobs, advantages)
    kl = kl_divergence(batch.old_dist, new_dist).mean()
    metrics = {"losses/policy_loss": -surrogate_new, "losses/kl": kl, **shared_metrics(batch, new_dist, new_values)}
    return {**metrics, "charts/cg_residual": cg_residual, "skipped": skipped}


def main(args: Args) -> list[float]:
    """Trains (with --resume, on from a checkpoint), or with --eval-checkpoint evaluates, and returns the episodic
    returns in the order they ended."""
    args, checkpoint = resumed_args(args) if args.resume else (args, None)
    if error := check_args(args):  # resumed: the saved arguments, with those that may change
        raise SystemExit(f"{args.exp_name}: error: {error}")
    auto = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if args.eval_checkpoint:
        return evaluate_checkpoint(args, device)
    run_dir = os.path.dirname(os.path.abspath(args.resume)) if args.resume else new_run_dir(args)
    torch.manual_seed(args.seed)
    envs = make_env(args.env_id, args.num_envs, f"videos/{os.path.basename(run_dir)}" if args.capture_video else None)
    continuous = isinstance(envs.single_action_space, gym.spaces.Box)
    image = len(envs.single_observation_space.shape) == 3  # scaled to [0, 1] by the NatureCNN, never normalised
    args.norm_obs = continuous and not image if args.norm_obs is None else args.norm_obs
    args.norm_reward = continuous if args.norm_reward is None else args.norm_reward
    args.target_kl = default_target_kl(envs.single_action_space) if args.target_kl is None else args.target_kl
    args.cg_damping = default_cg_damping(envs.single_action_space) if args.cg_damping is None else args.cg_damping
    agent, normalizer = build(args, envs, device)
    # fused: Adam's step as one kernel over all the parameters; on a CPU torch otherwise loops over them one by one
    value_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate, fused=True)
    optimizers = {"value_optimizer": value_optimizer}  # what --resume restores
    progress = dict(iteration=0, global_step=0, skipped_updates=0)  # where a run starts, or with --resume:
    progress = restore(checkpoint, agent, normalizer, optimizers) if checkpoint else progress
    purge = progress["global_step"] + 1 if checkpoint else None  # resumed: what followed the checkpoint is rewritten
    writer = SummaryWriter(run_dir, purge_step=purge)
    writer.add_text("hyperparameters", "\n\n".join(f"{key}: {value}" for key, value in vars(args).items()))

    batch_size = args.num_envs * args.num_steps
    num_iterations = max(args.total_timesteps // batch_size, 1)
    first_obs = envs.reset(seed=args.seed + progress["global_step"])[0]  # resumed: other starts than the first's
    next_obs = normalizer.obs_tensor(first_obs, device, update=not args.resume)  # resumed: counted already
    global_step, skipped_updates = progress["global_step"], progress["skipped_updates"]
    start_time, start_step, episodic_returns = time.time(), global_step, []
    try:
        for iteration in range(progress["iteration"] + 1, num_iterations + 1):
            data = rollout(envs, agent, normalizer, next_obs, args.num_steps)
            next_obs, global_step = data.last_obs, global_step + batch_size
            for episodic_return, length, _ in data.episodes:
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)
                episodic_returns.append(episodic_return)
            batch = make_batch(agent, data, args.gamma, args.gae_lambda)
            metrics = update(agent, value_optimizer, batch, args)

            skipped = metrics.pop("skipped")
            skipped_updates += skipped
            elapsed = time.time() - start_time
            sps = int((global_step - start_step) / elapsed)
            for key, value in {**metrics, "charts/skipped_updates": skipped_updates, "charts/SPS": sps}.items():
                writer.add_scalar(key, value, global_step)
            mean = f"{np.mean(episodic_returns[-20:]):8.1f}" if episodic_returns else "       -"
            left = f"{elapsed * (num_iterations - iteration) / (iteration - progress['iteration']):.0f} s left"
            warn = f" | {skipped} updates skipped: non-finite loss or gradient" if skipped else ""
            print(f"step {global_step:>9,} | return {mean} | SPS {sps:6,} | {elapsed:5.0f} s, {left}{warn}")
            if args.save_every and (iteration % args.save_every == 0 or iteration == num_iterations):
                state = training_state(iteration, global_step, skipped_updates, optimizers)
                writer.flush()  # the steps before the checkpoint are on disk: a resumed run purges only those after it
                save_checkpoint(agent, normalizer, args, f"{run_dir}/{args.exp_name}.model", state)
    except KeyboardInterrupt:  # Ctrl-C: exit as interrupted, once the model is saved if asked
        path = f"{run_dir}/{args.exp_name}.model"
        resume = f"; --resume {path} continues it" if args.save_every and os.path.exists(path) else ""
        print(f"{args.exp_name}: interrupted at step {global_step:,}{resume}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:  # whatever happens, tensorboard is flushed and the model saved if asked
        envs.close()
        writer.close()
        if args.save_model and not args.save_every:  # with --save-every, the last checkpoint is whole: it stays
            save_checkpoint(agent, normalizer, args, f"{run_dir}/{args.exp_name}.model")
    if args.save_model:
        with contextlib.closing(make_env(args.env_id, 1, time_limit=EVAL_TIME_LIMIT)) as eval_envs:
            evaluate(agent, normalizer, eval_envs, args.eval_episodes, args.seed)
    return episodic_returns


# ---- Plumbing, the same text in all five scripts and none of it the method: a reader may skip everything below. ----

SCRIPT = os.path.basename(__file__)  # checkpoints say which script saved them
EVAL_TIME_LIMIT = 1000  # evaluation cuts an episode here if its env has no time limit of its own


def make_env(env_id: str, num_envs: int, video_folder: str | None = None, time_limit: int | None = None):
    """num_envs copies of env_id that reset in the same step as an episode ends (its last obs is in info["final_obs"])
    and report each episode's return and length in info["episode"]. With a video_folder, env 0 is filmed there; with a
    time_limit, an env that has no time limit of its own is cut after that many steps."""

    def make(index: int) -> gym.Env:
        env = make_one(env_id, render_mode="rgb_array") if video_folder and index == 0 else make_one(env_id)
        if time_limit and env.spec.max_episode_steps is None:
            env = gym.wrappers.TimeLimit(env, time_limit)
        try:
            return gym.wrappers.RecordVideo(env, video_folder) if video_folder and index == 0 else env
        except Exception:  # no moviepy, or no renderer: the env made above is closed before the error goes on
            env.close()
            raise

    envs = gym.vector.SyncVectorEnv(
        [partial(make, i) for i in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def make_one(env_id: str, **kwargs) -> gym.Env:
    """gym.make(env_id), except for an Atari game (an ALE/ id, from ale-py): it is registered first and preprocessed
    as in Mnih et al. 2015 (up to 30 no-op starts, frames skipped 4 at a time, 84 × 84 grey, stacks of 4 frames), with
    v5's sticky actions (Machado et al. 2018) and episodes cut at 27,000 steps (ALE's own cap of 108,000 frames counts
    the no-ops, so it may end one a few steps earlier). Its rewards are clipped for learning by the Normalizer, so
    that the episode statistics keep the game's score."""
    if not env_id.startswith("ALE/"):
        return gym.make(env_id, **kwargs)
    import ale_py  # gymnasium's Atari extra: pip install ale-py

    gym.register_envs(ale_py)
    env = gym.wrappers.AtariPreprocessing(gym.make(env_id, frameskip=1, **kwargs), noop_max=30, frame_skip=4)
    return gym.wrappers.TimeLimit(gym.wrappers.FrameStackObservation(env, 4), 27_000)


class Normalizer:
    """Running observation normalisation, (o − μ)/σ, and reward scaling, r/σ_R with σ_R the running std of the
    discounted return (Engstrom et al. 2020, "Implementation Matters in Deep RL"), both clipped to ±10. Frozen, it
    changes no statistic. Not gymnasium's vector wrappers: they refuse same-step autoreset, and info["final_obs"] must
    be normalised with the same statistics as the observations. Images (obs_dim a shape) stay uint8, for the
    NatureCNN; sign_reward clips each reward to its sign first, as Atari agents learn (Mnih et al. 2015)."""

    def __init__(self, obs_dim, num_envs: int, gamma: float, norm_obs: bool, norm_reward: bool, sign_reward=False):
        self.norm_obs, self.norm_reward, self.gamma, self.frozen = norm_obs, norm_reward, gamma, False
        self.image, self.sign_reward = not isinstance(obs_dim, int), sign_reward  # an image is never normalised
        self.stats = {"obs": RunningMeanStd(shape=(1 if self.image else obs_dim,)), "return": RunningMeanStd(shape=())}
        self.discounted_return = np.zeros(num_envs)

    def obs(self, obs: np.ndarray, update: bool = True) -> np.ndarray:
        if not self.norm_obs:
            return obs
        if update and not self.frozen:
            self.stats["obs"].update(obs)
        return np.clip((obs - self.stats["obs"].mean) / np.sqrt(self.stats["obs"].var + 1e-8), -10, 10)

    def obs_tensor(self, obs: np.ndarray, device: torch.device, update: bool = True) -> torch.Tensor:
        """obs normalised, as float32 on device (an image: as it is, uint8): what the agent sees."""
        if self.image:
            return torch.as_tensor(obs, dtype=torch.uint8, device=device)
        return torch.as_tensor(self.obs(obs, update), dtype=torch.float32, device=device)

    def reward(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        reward = np.sign(reward) if self.sign_reward else reward
        if not self.norm_reward:
            return reward
        if not self.frozen:
            self.discounted_return = self.gamma * self.discounted_return + reward
            self.stats["return"].update(self.discounted_return)
            self.discounted_return[done] = 0.0
        return np.clip(reward / np.sqrt(self.stats["return"].var + 1e-8), -10, 10)

    def state_dict(self) -> dict:
        return {
            n: {k: torch.tensor(v, dtype=torch.float64) for k, v in vars(rms).items()} for n, rms in self.stats.items()
        }

    def load_state_dict(self, state: dict) -> None:
        for name, rms in self.stats.items():
            vars(rms).update({k: state[name][k].numpy() for k in vars(rms)})


class Rollout(NamedTuple):
    """num_steps steps of N envs. next_obs[t] is the true successor of obs[t]: where an episode ended, the env has reset
    already, so it is info["final_obs"], and no transition spans two episodes. episodes: (return, length, truncated)."""

    obs: torch.Tensor  # (T, N, obs_dim)
    next_obs: torch.Tensor  # (T, N, obs_dim)
    actions: torch.Tensor  # (T, N) or (T, N, act_dim), as sampled, before clipping to the bounds
    logprobs: torch.Tensor  # (T, N)
    rewards: torch.Tensor  # (T, N)
    terminations: torch.Tensor  # (T, N), 1.0 where the episode terminated
    dones: torch.Tensor  # (T, N), 1.0 where it terminated or was truncated
    last_obs: torch.Tensor  # (N, obs_dim), where the next rollout continues
    episodes: list[tuple[float, int, bool]]


def rollout(envs, agent: Agent, normalizer: Normalizer, next_obs: torch.Tensor, num_steps: int, deterministic=False):
    """Runs πθ (its mode, if deterministic) for num_steps steps in each env, from next_obs. Returns a Rollout."""
    device, space, num_envs = next_obs.device, envs.single_action_space, envs.num_envs
    obs = torch.zeros((num_steps, *next_obs.shape), dtype=next_obs.dtype, device=device)  # (T, N, obs_dim), or images
    true_next_obs = torch.zeros_like(obs)
    actions = torch.zeros((num_steps, num_envs, *space.shape), device=device)
    logprobs = torch.zeros((num_steps, num_envs), device=device)
    rewards, terminations, dones = (np.zeros((num_steps, num_envs), dtype=np.float32) for _ in range(3))
    episodes = []
    for t in range(num_steps):
        obs[t] = next_obs
        with torch.no_grad():
            dist = agent.dist(next_obs)
            action = dist.mode if deterministic else dist.sample()
            logprobs[t] = dist.log_prob(action)
        actions[t] = action
        env_action = action.cpu().numpy()
        if agent.continuous:  # the env gets the action clipped to its bounds; we learn from the one we sampled
            env_action = np.clip(env_action, space.low, space.high)
        raw_obs, reward, terminated, truncated, info = envs.step(env_action)
        done = terminated | truncated
        next_obs = normalizer.obs_tensor(raw_obs, device)
        true_next_obs[t] = next_obs
        if done.any():  # those envs have reset already: their successor is the episode's final obs
            true_next_obs[t, done] = normalizer.obs_tensor(np.stack(info["final_obs"][done]), device, update=False)
        rewards[t], terminations[t], dones[t] = normalizer.reward(reward, done), terminated, done
        for i in np.flatnonzero(info.get("_episode", [])):
            ended = (
                float(info["episode"]["r"][i]),
                int(info["episode"]["l"][i]),
                bool(truncated[i] and not terminated[i]),
            )
            episodes.append(ended)
    rewards, terminations, dones = (torch.as_tensor(x, device=device) for x in (rewards, terminations, dones))
    return Rollout(obs, true_next_obs, actions, logprobs, rewards, terminations, dones, next_obs, episodes)


def evaluate(agent: Agent, normalizer: Normalizer, envs, episodes: int, seed: int) -> list[float]:
    """Prints and returns the returns of the deterministic policy (argmax, or the Gaussian mean) in envs, one env whose
    episodes all end (make_env's time_limit), with the normaliser frozen."""
    normalizer = copy.deepcopy(normalizer)
    normalizer.frozen = True
    next_obs = normalizer.obs_tensor(envs.reset(seed=seed)[0], next(agent.parameters()).device)
    spec, ended = envs.unwrapped.envs[0].spec, []  # its time limit is make_env's time_limit if it had none
    chunk = min(spec.max_episode_steps, 128)  # an episode may span chunks; at most 127 steps run past the last needed
    while len(ended) < episodes:
        data = rollout(envs, agent, normalizer, next_obs, chunk, deterministic=True)
        next_obs, ended = data.last_obs, ended + data.episodes
    for i, (episodic_return, length, truncated) in enumerate(ended[:episodes], 1):
        print(f"eval episode {i}: return {episodic_return:.2f} in {length} steps" + " (truncated)" * truncated)
    returns = [episodic_return for episodic_return, _, _ in ended[:episodes]]
    print(f"eval: {np.mean(returns):.2f} ± {np.std(returns):.2f} over {episodes} episodes of {spec.id}")
    return returns


def build(args: Args, envs, device: torch.device) -> tuple[Agent, Normalizer]:
    """The agent and the normaliser for the envs' spaces; a ValueError says what is not supported."""
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    shape = obs_space.shape if isinstance(obs_space, gym.spaces.Box) else ()
    if not (len(shape) == 1 or len(shape) == 3 and obs_space.dtype == np.uint8):
        raise ValueError(f"observation space {obs_space}; supported: a flat Box, or a uint8 image")
    if not (action_space == gym.spaces.Discrete(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else
            isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):  # fmt: skip
        raise ValueError(f"action space {action_space}; supported: Discrete(n) starting at 0, or a flat Box")
    if len(shape) == 3 and args.norm_obs:
        raise ValueError("--norm-obs is for flat observations: images are scaled to [0, 1]")
    obs_dim = shape[0] if len(shape) == 1 else shape  # a size, or an image's shape
    atari = args.env_id.startswith("ALE/")
    normalizer = Normalizer(obs_dim, envs.num_envs, args.gamma, args.norm_obs, args.norm_reward, sign_reward=atari)
    return Agent(obs_dim, envs.single_action_space, args.log_std_init).to(device), normalizer


def save_checkpoint(agent: Agent, normalizer: Normalizer, args: Args, path: str, progress: dict | None = None):
    """Only tensors and plain values, written to a temporary file and renamed into place: never half a checkpoint.
    progress: a training_state, which --resume needs."""
    state = {"agent": agent.state_dict(), "normalizer": normalizer.state_dict(), "args": vars(args)}
    state |= {"progress": progress} if progress else {}
    torch.save({"script": SCRIPT, **state}, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)
    print(f"model saved to {path}")


def evaluate_checkpoint(args: Args, device: torch.device) -> list[float]:
    """Evaluates --eval-checkpoint in the env it was trained on, rebuilt with the agent from its saved arguments.
    weights_only=True unpickles tensors and plain values only, so a checkpoint cannot run code."""
    with contextlib.ExitStack() as stack:
        try:
            checkpoint = torch.load(args.eval_checkpoint, map_location=device, weights_only=True)
            if checkpoint.get("script", SCRIPT) != SCRIPT:
                raise ValueError(f"it was saved by {checkpoint['script']}, not by {SCRIPT}")
            saved = Args(**checkpoint["args"])
            envs = stack.enter_context(contextlib.closing(make_env(saved.env_id, 1, time_limit=EVAL_TIME_LIMIT)))
            agent, normalizer = build(saved, envs, device)
            agent.load_state_dict(checkpoint["agent"])
            normalizer.load_state_dict(checkpoint["normalizer"])
        except Exception as e:  # missing, truncated, foreign, or holding objects that are not plain data
            raise SystemExit(
                f"{args.exp_name}: error: --eval-checkpoint {args.eval_checkpoint}: {first_line(e)}"
            ) from None
        return evaluate(agent, normalizer, envs, args.eval_episodes, args.seed)


def first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def new_run_dir(args: Args) -> str:
    """A new folder runs/{env}__{exp_name}__{seed}__{unix time}_{suffix}: mkdtemp's suffix keeps apart two runs that
    start in the same second, and an ALE/ id's / becomes - (ALE/Pong-v5 → ALE-Pong-v5: one folder)."""
    os.makedirs("runs", exist_ok=True)
    env_name = args.env_id.replace("/", "-")
    return tempfile.mkdtemp(prefix=f"{env_name}__{args.exp_name}__{args.seed}__{int(time.time())}_", dir="runs")


# May differ between a run and its --resume: they change where and how it runs, not what it learns.
RESUME_MAY_CHANGE = ("resume", "save_every", "save_model", "device", "eval_episodes", "capture_video")


def resumed_args(args: Args) -> tuple[Args, dict]:
    """The checkpoint that --resume names and the arguments its run had, but for those in RESUME_MAY_CHANGE given here
    with a value other than their default. Any other flag given here with a value that is neither its default nor the
    saved one stops the script, as does a file that is not a checkpoint of this script written with --save-every;
    weights_only=True: loading it cannot run code."""
    try:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=True)
        if checkpoint.get("script", SCRIPT) != SCRIPT:
            raise ValueError(f"it was saved by {checkpoint['script']}, not by {SCRIPT}")
        if "progress" not in checkpoint:
            raise ValueError("it holds no training state to resume (it was saved without --save-every)")
        saved = Args(**checkpoint["args"])
    except Exception as e:  # missing, truncated, foreign, or holding objects that are not plain data
        raise SystemExit(f"{args.exp_name}: error: --resume {args.resume}: {first_line(e)}") from None
    default = Args()
    for name in (name for name in vars(args) if name not in RESUME_MAY_CHANGE):
        given, kept = getattr(args, name), getattr(saved, name)
        if given != getattr(default, name) and given != kept:
            flag = f"--{name.replace('_', '-')}"
            raise SystemExit(f"{args.exp_name}: error: {flag} {given} contradicts the run to resume, which has {kept}")
    changed = {name: getattr(args, name) for name in RESUME_MAY_CHANGE if getattr(args, name) != getattr(default, name)}
    return dataclasses.replace(saved, **changed), checkpoint


def training_state(iteration: int, global_step: int, skipped_updates: int, optimizers: dict, **extra) -> dict:
    """What --resume needs besides the model: where the run is, every optimizer's state (its learning rate among
    them), the random states of torch and numpy, and the script's own (ppo_kl: β)."""
    kind, keys, *rest = np.random.get_state()
    rng = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest]}
    rng["cuda"] = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    optimizers = {name: optimizer.state_dict() for name, optimizer in optimizers.items()}
    return dict(iteration=iteration, global_step=global_step, skipped_updates=skipped_updates, **extra,
                optimizers=optimizers, rng=rng)  # fmt: skip


def restore(checkpoint: dict, agent: Agent, normalizer: Normalizer, optimizers: dict) -> dict:
    """Sets the agent, the normaliser's statistics, the optimizers and the random states to the checkpoint's, in
    place, and returns its training_state."""
    progress = checkpoint["progress"]
    agent.load_state_dict(checkpoint["agent"])
    normalizer.load_state_dict(checkpoint["normalizer"])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(progress["optimizers"][name])
    torch.set_rng_state(progress["rng"]["torch"])
    if progress["rng"]["cuda"] and len(progress["rng"]["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(progress["rng"]["cuda"])
    kind, keys, *rest = progress["rng"]["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    return progress


def check_args(args: Args) -> str | None:
    """Why these arguments cannot run, in one line, or None: the first flag outside its range (Args.rules), or the
    error of making the env, the agent for its spaces and, with --capture-video, one filmed frame."""
    for name, (allowed, rule) in args.rules().items():
        if not allowed:
            return f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}"
    if args.eval_checkpoint:  # the env is the checkpoint's, made (and so checked) when it is loaded
        return None
    try:  # gymnasium's, torch's and build's own errors say what is missing or not supported
        with tempfile.TemporaryDirectory() if args.capture_video else contextlib.nullcontext() as folder:
            with contextlib.closing(make_env(args.env_id, 1, folder)) as envs:
                build(args, envs, torch.device("cpu"))
                envs.reset(seed=0)
    except Exception as e:
        return f"cannot run --env-id {args.env_id}{' with --capture-video' * args.capture_video}: {first_line(e)}"
    return None


if __name__ == "__main__":
    main(tyro.cli(Args))
