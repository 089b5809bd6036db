"""Natural policy gradient: the steepest ascent direction in the geometry of the policy's KL divergence.

    maximise  L(θ) = Ê[πθ(a|s)/π_old(a|s) · Â]   subject to   Ê[KL(π_old(·|s) ‖ πθ(·|s))] ≤ δ

Taken to first order in L and second order in the KL (whose Hessian at θ_old is the Fisher matrix F), the problem has
the closed-form solution θ ← θ_old + s, with

    g = ∇L(θ_old),   x ≈ F⁻¹g  (conjugate gradient on products F·v),   s = √(2δ / xᵀFx) · x,  so ½·sᵀFs = δ.

NPG takes that step as it is.

Kakade 2002, "A Natural Policy Gradient"; the constrained form is from Schulman et al. 2015, "Trust Region Policy
Optimization". Â is GAE(γ, λ) (Schulman et al. 2016); the critic V is a separate network fitted by minibatch Adam.

npg.py is pg.py with the Adam step on the policy replaced by the natural gradient step; trpo.py is npg.py plus a
backtracking line search on s. `diff npg.py trpo.py` shows only the line search.

    python npg.py --env-id Hopper-v5 --save-model  # without --env-id: CartPole-v1
"""

import copy
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
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

    env_id: str = "CartPole-v1"
    """the id of the gymnasium environment"""
    total_timesteps: int = 500_000
    """total environment steps, summed over the envs"""
    num_envs: int = 4
    """the number of parallel environments"""
    num_steps: int = 256
    """the number of steps per env per policy update; the batch is num_envs · num_steps"""
    target_kl: float = 0.01
    """δ: the step is sized so that ½·sᵀFs = δ, the KL to second order"""
    cg_iters: int = 10
    """conjugate-gradient iterations for x ≈ F⁻¹g"""
    cg_damping: float = 0.1
    """λ in (F + λI)·v, which keeps CG well conditioned"""
    gamma: float = 0.99
    """the discount factor γ"""
    gae_lambda: float = 0.97
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
    log_std_init: float = 0.0
    """the Gaussian's initial log σ, the same for every action dimension (Box actions only)"""


def make_env(env_id: str, num_envs: int, video_folder: str | None = None, max_episode_steps: int | None = None):
    """num_envs copies of env_id that reset in the same step as an episode ends (its last obs is in info["final_obs"])
    and report each episode's return and length in info["episode"]. With a video_folder, env 0 is filmed there."""
    env_fns = [partial(gym.make, env_id, max_episode_steps=max_episode_steps) for _ in range(num_envs)]
    if video_folder is not None:
        env_fns[0] = lambda: gym.wrappers.RecordVideo(gym.make(env_id, render_mode="rgb_array"), video_folder)
    envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


class Normalizer:
    """Running observation normalisation, (o − μ)/σ, and reward scaling, r/σ_R with σ_R the running std of the
    discounted return (Engstrom et al. 2020, "Implementation Matters in Deep RL"), both clipped to ±10. Frozen, it
    changes no statistic. Not gymnasium's vector wrappers: they refuse same-step autoreset, and info["final_obs"] must
    be normalised with the same statistics as the observations."""

    def __init__(self, obs_dim: int, num_envs: int, gamma: float, norm_obs: bool, norm_reward: bool):
        self.norm_obs, self.norm_reward, self.gamma, self.frozen = norm_obs, norm_reward, gamma, False
        self.stats = {"obs": RunningMeanStd(shape=(obs_dim,)), "return": RunningMeanStd(shape=())}
        self.discounted_return = np.zeros(num_envs)

    def obs(self, obs: np.ndarray, update: bool = True) -> np.ndarray:
        if not self.norm_obs:
            return obs
        if update and not self.frozen:
            self.stats["obs"].update(obs)
        return np.clip((obs - self.stats["obs"].mean) / np.sqrt(self.stats["obs"].var + 1e-8), -10, 10)

    def reward(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
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


def mlp(in_dim: int, out_dim: int, gain: float) -> nn.Sequential:
    """in_dim → 64 → 64 → out_dim with tanh between, initialised orthogonally; gain scales the output layer."""
    layers = []
    for n_in, n_out, layer_gain in [(in_dim, 64, np.sqrt(2)), (64, 64, np.sqrt(2)), (64, out_dim, gain)]:
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
        nn.init.orthogonal_(layers[-2].weight, layer_gain)
        nn.init.zeros_(layers[-2].bias)
    return nn.Sequential(*layers[:-1])


class Agent(nn.Module):
    """The actor πθ(a|s) and the critic V(s): two separate tanh MLPs with 64 × 64 hidden units."""

    def __init__(self, obs_dim: int, action_space: gym.Space, log_std_init: float = 0.0):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        act_dim = action_space.shape[0] if self.continuous else action_space.n
        self.critic = mlp(obs_dim, 1, gain=1.0)
        self.actor = mlp(obs_dim, act_dim, gain=0.01)
        if self.continuous:
            self.actor_logstd = nn.Parameter(torch.full((act_dim,), log_std_init))

    def policy_parameters(self) -> list[nn.Parameter]:
        """θ: the actor's weights and, for a Gaussian, its log σ."""
        return [p for name, p in self.named_parameters() if not name.startswith("critic.")]

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        """πθ(·|s): Categorical(softmax(logits)), or N(μθ(s), diag(σ²)) with a state-independent log σ. Argument
        validation is off: checking every sample against the support costs a seventh of a rollout."""
        if self.continuous:
            normal = Normal(self.actor(obs), self.actor_logstd.exp(), validate_args=False)
            return Independent(normal, 1, validate_args=False)
        return Categorical(logits=self.actor(obs), validate_args=False)


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


def fisher_vector_product(grad_kl: torch.Tensor, params: list[nn.Parameter], v: torch.Tensor) -> torch.Tensor:
    """F·v, where F = ∇²θ Ê[KL(π_old ‖ πθ)] at θ = θ_old is the Fisher matrix: F·v = ∇θ((∇θ KL)ᵀv), never forming F.

    grad_kl = ∇θ KL is built once per update with create_graph=True, from a KL whose π_old is detached, so that only
    πθ moves; θ includes the Gaussian's log σ."""
    return flat_grad(grad_kl @ v, params, retain_graph=True)


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


def natural_gradient_step(g: torch.Tensor, fvp, target_kl: float, cg_iters: int, damping: float):
    """s = √(2δ / xᵀFx) · x with x ≈ (F + λI)⁻¹g: the step that maximises gᵀs subject to ½·sᵀFs = δ, for fvp(v) = F·v.
    Returns s and the CG residual. A zero gradient gives x = 0 and s = 0."""
    x, residual = conjugate_gradient(lambda v: fvp(v) + damping * v, g, cg_iters)
    xFx = x @ fvp(x)
    return torch.sqrt(2 * target_kl / xFx.clamp_min(1e-12)) * x, residual  # s = √(2δ / xᵀFx) · x


def policy_objective(
    agent: Agent, obs, actions, old_logprobs, advantages, old_dist
) -> tuple[torch.Tensor, torch.Tensor]:
    """L(θ) and Ê[KL(π_old ‖ πθ)] at the agent's current θ, from one forward pass."""
    dist = agent.dist(obs)
    return surrogate(dist.log_prob(actions), old_logprobs, advantages), kl_divergence(old_dist, dist).mean()


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


def rollout(envs, agent: Agent, normalizer: Normalizer, next_obs: torch.Tensor, num_steps: int, deterministic=False):
    """Runs πθ (its mode, if deterministic) for num_steps steps in each env. Returns (T, N, ...) tensors, the obs to
    continue from, and the (return, length) of each episode that ended.

    true_next_obs[t] is the true successor of obs[t]: where an episode ended, the env has already reset, so the
    successor is info["final_obs"], not the new episode's first obs. So no transition spans two episodes."""
    device, space, num_envs = next_obs.device, envs.single_action_space, envs.num_envs
    obs = torch.zeros((num_steps, *next_obs.shape), device=device)  # (T, N, obs_dim)
    true_next_obs = torch.zeros_like(obs)
    actions = torch.zeros((num_steps, num_envs, *space.shape), device=device)
    logprobs = torch.zeros((num_steps, num_envs), device=device)
    rewards, terminations, dones = (np.zeros((num_steps, num_envs), dtype=np.float32) for _ in range(3))
    ended_episodes = []
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
        next_obs = torch.as_tensor(normalizer.obs(raw_obs), dtype=torch.float32, device=device)
        true_next_obs[t] = next_obs
        if done.any():  # those envs have reset already: their successor is the episode's final obs
            final_obs = normalizer.obs(np.stack(info["final_obs"][done]), update=False)
            true_next_obs[t, done] = torch.as_tensor(final_obs, dtype=torch.float32, device=device)
        rewards[t], terminations[t], dones[t] = normalizer.reward(reward, done), terminated, done
        for i in np.flatnonzero(info.get("_episode", [])):
            ended_episodes.append((float(info["episode"]["r"][i]), int(info["episode"]["l"][i])))
    rewards, terminations, dones = (torch.as_tensor(x, device=device) for x in (rewards, terminations, dones))
    return obs, true_next_obs, actions, logprobs, rewards, terminations, dones, next_obs, ended_episodes


def main(args: Args) -> list[float]:
    """Trains, or with --eval-checkpoint evaluates, and returns the episodic returns in the order they ended."""
    if error := check_args(args):
        raise SystemExit(f"{args.exp_name}: error: {error}")
    auto = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if args.eval_checkpoint:
        return evaluate(*load_checkpoint(args, device), args.eval_episodes, args.seed)
    os.makedirs("runs", exist_ok=True)  # mkdtemp: a new folder, even for two runs that start in the same second
    run_dir = tempfile.mkdtemp(prefix=f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}_", dir="runs")
    torch.manual_seed(args.seed)
    envs = make_env(args.env_id, args.num_envs, f"videos/{os.path.basename(run_dir)}" if args.capture_video else None)
    continuous = isinstance(envs.single_action_space, gym.spaces.Box)
    args.norm_obs, args.norm_reward = (continuous if f is None else f for f in (args.norm_obs, args.norm_reward))
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "\n\n".join(f"{key}: {value}" for key, value in vars(args).items()))
    agent, normalizer = build(args, envs, device)
    value_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate)

    batch_size = args.num_envs * args.num_steps
    num_iterations = max(args.total_timesteps // batch_size, 1)
    raw_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.tensor(normalizer.obs(raw_obs), dtype=torch.float32, device=device)
    global_step, start_time, skipped_updates, episodic_returns = 0, time.time(), 0, []
    try:
        for iteration in range(1, num_iterations + 1):
            obs, true_next_obs, actions, logprobs, rewards, terminations, dones, next_obs, ended_episodes = rollout(
                envs, agent, normalizer, next_obs, args.num_steps
            )
            global_step += batch_size
            for episodic_return, length in ended_episodes:
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)
                episodic_returns.append(episodic_return)

            with torch.no_grad():
                values = agent.value(obs)
                next_values = agent.value(true_next_obs) * (1.0 - terminations)  # V(s_{t+1}), 0 after termination
            advantages = compute_gae(rewards, values, next_values, dones, args.gamma, args.gae_lambda)
            returns = advantages + values

            b_obs = obs.reshape(batch_size, -1)
            b_actions = actions.reshape(batch_size, *envs.single_action_space.shape)
            b_logprobs = logprobs.reshape(-1)
            b_advantages = advantages.reshape(-1)
            # nan_to_num: the std of a single sample is NaN, and its normalised advantage is then 0
            b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std().nan_to_num() + 1e-8)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)
            with torch.no_grad():
                old_dist = agent.dist(b_obs)  # π_old, for the exact KL after the update

            # ALGO LOGIC: the natural gradient step θ ← θ_old + s
            params = agent.policy_parameters()
            theta_old = nn.utils.parameters_to_vector(params).detach()
            objective = partial(policy_objective, agent, b_obs, b_actions, b_logprobs, b_advantages, old_dist)
            surrogate_old, kl = objective()  # the KL is 0 at θ_old, and its Hessian there is F
            g = flat_grad(surrogate_old, params, retain_graph=True)
            fvp = partial(fisher_vector_product, flat_grad(kl, params, create_graph=True), params)
            step, cg_residual = natural_gradient_step(g, fvp, args.target_kl, args.cg_iters, args.cg_damping)
            skipped = not torch.isfinite(step).all()  # a non-finite loss or gradient: θ stays θ_old
            if not skipped:
                set_flat_params(params, theta_old + step)

            # The critic: a few epochs of minibatch Adam on (V(s) − R̂)²
            for _ in range(args.vf_iters):
                for mb in torch.randperm(batch_size, device=device).tensor_split(args.num_minibatches):
                    value_loss = ((agent.value(b_obs[mb]) - b_returns[mb]) ** 2).mean()
                    skipped += not guarded_step(value_optimizer, value_loss)

            with torch.no_grad():  # the same in every script: the losses after the update, over the whole batch
                new_dist = agent.dist(b_obs)
                policy_loss = -surrogate(new_dist.log_prob(b_actions), b_logprobs, b_advantages)
                value_loss = ((agent.value(b_obs) - b_returns) ** 2).mean()
            skipped_updates += skipped
            explained_var = 1 - (b_returns - b_values).var() / b_returns.var() if b_returns.var() > 0 else math.nan
            writer.add_scalar("charts/cg_residual", cg_residual, global_step)
            writer.add_scalar("charts/skipped_updates", skipped_updates, global_step)
            writer.add_scalar("losses/value_loss", value_loss, global_step)
            writer.add_scalar("losses/policy_loss", policy_loss, global_step)
            writer.add_scalar("losses/entropy", new_dist.entropy().mean(), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("losses/kl", kl_divergence(old_dist, new_dist).mean(), global_step)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("charts/SPS", sps, global_step)
            mean = f"{np.mean(episodic_returns[-20:]):8.1f}" if episodic_returns else "       -"
            left = f"{elapsed * (num_iterations - iteration) / iteration:.0f} s left"
            warn = f" | {skipped} updates skipped: non-finite loss or gradient" if skipped else ""
            print(f"step {global_step:>9,} | return {mean} | SPS {sps:6,} | {elapsed:5.0f} s, {left}{warn}")
    except KeyboardInterrupt:  # Ctrl-C: exit as interrupted, once the model is saved if asked
        print(f"{args.exp_name}: interrupted at step {global_step:,}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:  # whatever happens, tensorboard is flushed and the model saved if asked
        envs.close()
        writer.close()
        if args.save_model:  # only tensors and plain values, renamed into place: never half a checkpoint on disk
            checkpoint = {"agent": agent.state_dict(), "normalizer": normalizer.state_dict(), "args": vars(args)}
            torch.save(checkpoint, f"{run_dir}/tmp")
            os.replace(f"{run_dir}/tmp", f"{run_dir}/{args.exp_name}.model")
            print(f"model saved to {run_dir}/{args.exp_name}.model")
    if args.save_model:
        evaluate(agent, normalizer, args.env_id, args.eval_episodes, args.seed)
    return episodic_returns


# Plumbing: evaluation, checkpoints and argument checks. Nothing below is the method.


def build(args: Args, envs, device: torch.device) -> tuple[Agent, Normalizer]:
    obs_dim = envs.single_observation_space.shape[0]
    normalizer = Normalizer(obs_dim, envs.num_envs, args.gamma, args.norm_obs, args.norm_reward)
    return Agent(obs_dim, envs.single_action_space, args.log_std_init).to(device), normalizer


def evaluate(agent: Agent, normalizer: Normalizer, env_id: str, episodes: int, seed: int) -> list[float]:
    """Prints and returns the returns of the deterministic policy (argmax, or the Gaussian mean), with the normaliser
    frozen. Every episode ends: at the env's time limit, or else after 1,000 steps."""
    limit = gym.spec(env_id).max_episode_steps or 1000
    envs, normalizer = make_env(env_id, 1, max_episode_steps=limit), copy.deepcopy(normalizer)
    normalizer.frozen = True
    raw_obs, _ = envs.reset(seed=seed)
    next_obs = torch.tensor(normalizer.obs(raw_obs), dtype=torch.float32, device=next(agent.parameters()).device)
    results = []
    while len(results) < episodes:
        *_, terminations, dones, next_obs, ended = rollout(envs, agent, normalizer, next_obs, limit, True)
        results += zip(ended, (dones > terminations)[dones > 0].tolist(), strict=True)  # one env: in step order
    for i, ((episodic_return, length), truncated) in enumerate(results[:episodes], 1):
        print(f"eval episode {i}: return {episodic_return:.2f} in {length} steps" + " (truncated)" * truncated)
    returns = [episodic_return for (episodic_return, _), _ in results[:episodes]]
    print(f"eval: {np.mean(returns):.2f} ± {np.std(returns):.2f} over {episodes} episodes of {env_id}")
    return returns


def load_checkpoint(args: Args, device: torch.device) -> tuple[Agent, Normalizer, str]:
    """The agent, normaliser and env id saved in --eval-checkpoint. weights_only=True unpickles tensors and plain
    values only, so a checkpoint cannot run code."""
    try:
        checkpoint = torch.load(args.eval_checkpoint, map_location=device, weights_only=True)
        saved = Args(**checkpoint["args"])
        agent, normalizer = build(saved, make_env(saved.env_id, 1), device)
        agent.load_state_dict(checkpoint["agent"])
        normalizer.load_state_dict(checkpoint["normalizer"])
    except Exception as e:  # missing, truncated, foreign, or holding objects that are not plain data
        raise SystemExit(f"{args.exp_name}: error: --eval-checkpoint {args.eval_checkpoint}: {first_line(e)}") from None
    return agent, normalizer, saved.env_id


def first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def check_args(args: Args) -> str | None:
    """Why these arguments cannot run, in one line, or None if they can."""
    batch_size = args.num_envs * args.num_steps
    devices = {"auto": True, "cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    positive = ["total_timesteps", "num_envs", "num_steps", "target_kl", "cg_iters", "cg_damping", "vf_learning_rate"]
    rules = {name: (getattr(args, name) > 0, "positive") for name in positive + ["vf_iters", "eval_episodes"]}
    rules["gamma"] = (0 < args.gamma <= 1, "in (0, 1]")
    rules["gae_lambda"] = (0 <= args.gae_lambda <= 1, "in [0, 1]")
    rules["log_std_init"] = (math.isfinite(args.log_std_init), "finite")
    rules["num_minibatches"] = (0 < args.num_minibatches <= batch_size, f"in [1, {batch_size}], the batch size")
    rules["device"] = (devices.get(args.device), "one of " + ", ".join(d for d, ok in devices.items() if ok) + " here")
    for name, (allowed, rule) in rules.items():
        if not allowed:
            return f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}"
    try:
        env = gym.make(args.env_id)
        env.close()
    except Exception as e:  # an unknown id, or a missing package: gymnasium's message says which
        return f"cannot make --env-id {args.env_id}: {first_line(e)}"
    if not (isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1):
        return f"{args.env_id} has observation space {env.observation_space}; supported: a flat Box"
    space = env.action_space
    if not (space == gym.spaces.Discrete(space.n) if isinstance(space, gym.spaces.Discrete) else
            isinstance(space, gym.spaces.Box) and len(space.shape) == 1):  # fmt: skip
        return f"{args.env_id} has action space {space}; supported: Discrete(n) starting at 0, or a flat Box"
    try:
        with tempfile.TemporaryDirectory() as folder:  # films one frame: needs moviepy and the env's renderer
            if args.capture_video:
                gym.wrappers.RecordVideo(gym.make(args.env_id, render_mode="rgb_array"), folder).reset(seed=0)
    except Exception as e:  # gymnasium's message says which package to install
        return f"--capture-video cannot film {args.env_id}: {first_line(e)}"
    return None


if __name__ == "__main__":
    main(tyro.cli(Args))
