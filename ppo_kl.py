"""Proximal Policy Optimization with an adaptive KL penalty.

    maximise  L(θ) = Ê[r·Â − β·KL(π_old(·|s) ‖ πθ(·|s))],   r = πθ(a|s)/π_old(a|s)

by K epochs of minibatch Adam on each batch, a first-order stand-in for TRPO's trust region:
after each update, with d its mean KL, β ← 2β if d > 1.5·d_targ and β ← β/2 if d < d_targ/1.5 (--no-adapt-beta: fixed).
The critic V is a separate network trained in the same minibatches, on ½(V(s) − R̂)²; Â is GAE(γ, λ) (Schulman et al.
2016), normalised per minibatch.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms", with the implementation details of Huang et al. 2022,
"The 37 Implementation Details of PPO": orthogonal init, Adam ε = 1e-5, a linearly annealed learning rate and a global
gradient-norm clip. PPO replaces trpo.py's second-order step by these first-order epochs, and ppo_clip.py and ppo_kl.py
differ only in the objective: `diff ppo_clip.py ppo_kl.py`.

    python ppo_kl.py --env-id Hopper-v5 --total-timesteps 1000000
"""

import copy
import importlib.util
import os
import random
import shlex
import time
from collections import deque
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Independent, Normal
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment, used in the run folder's name"""
    seed: int = 1
    """seed of the experiment; a CPU run is reproducible bit for bit"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda or mps"""
    capture_video: bool = False
    """whether to save videos of the first env's episodes to `videos/` (needs moviepy)"""
    save_model: bool = False
    """whether to save the weights and normalisation statistics to the run folder, then evaluate them"""

    env_id: str = "CartPole-v1"
    """the id of the gymnasium environment"""
    total_timesteps: int = 200_000
    """total environment steps, summed over the envs"""
    num_envs: int = 4
    """the number of parallel environments"""
    num_steps: int = 512
    """the number of steps per env per policy update; the batch is num_envs · num_steps"""
    learning_rate: float = 3e-4
    """Adam's learning rate for the policy and the critic"""
    anneal_lr: bool = True
    """whether to decay the learning rate linearly to 0"""
    gamma: float = 0.99
    """the discount factor γ"""
    gae_lambda: float = 0.95
    """the GAE λ; 1 gives Monte-Carlo returns minus the baseline"""
    update_epochs: int = 10
    """K: the epochs of minibatch Adam per batch"""
    num_minibatches: int = 32
    """minibatches per epoch"""
    init_beta: float = 1.0
    """β's value for the first update"""
    adapt_beta: bool = True
    """whether to double or halve β toward the target KL after each update; otherwise β stays fixed"""
    ent_coef: float = 0.0
    """the coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """the coefficient of the value loss"""
    max_grad_norm: float = 0.5
    """the largest global norm of the gradient"""
    target_kl: float = 0.01
    """d_targ: the mean KL per update that β's adaptation aims for"""
    norm_obs: bool | None = None
    """normalise observations by running mean and std; None means on for Box actions, off otherwise"""
    norm_reward: bool | None = None
    """scale rewards by the running std of the discounted return; None means on for Box actions, off otherwise"""


def check_args(args: Args) -> str | None:
    """Why these arguments cannot train, in one line, or None if they can."""
    sizes = ("total_timesteps", "num_envs", "num_steps", "num_minibatches")
    for name in sizes + ("update_epochs", "learning_rate", "max_grad_norm", "init_beta"):
        if getattr(args, name) <= 0:
            return f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}"
    if args.num_envs * args.num_steps < 2 * args.num_minibatches:
        return f"--num-minibatches {args.num_minibatches} needs --num-envs × --num-steps of at least twice that"
    if not 0 < args.gamma <= 1:
        return f"--gamma must be in (0, 1], got {args.gamma}"
    if not 0 <= args.gae_lambda <= 1:
        return f"--gae-lambda must be in [0, 1], got {args.gae_lambda}"
    if args.target_kl <= 0:
        return f"--target-kl must be positive, got {args.target_kl}"
    available = {"auto": True, "cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if args.device not in available:
        return f"--device must be auto, cpu, cuda or mps, got {args.device!r}"
    if not available[args.device]:
        return f"--device {args.device} is not available on this machine"
    try:
        env = gym.make(args.env_id)
    except gym.error.Error as e:
        return f"cannot make --env-id {args.env_id!r}: {e}"
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        return f"{args.env_id} has observation space {obs_space}; supported: a flat Box"
    flat_box = isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1
    if not (flat_box or isinstance(act_space, gym.spaces.Discrete)):
        return f"{args.env_id} has action space {act_space}; supported: Discrete, or a flat Box"
    if args.capture_video and not importlib.util.find_spec("moviepy"):
        return "--capture-video needs moviepy: pip install moviepy"
    return None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def reproduce_command(args: Args) -> str:
    """The command line that repeats this run: every flag, defaults included."""
    flags = []
    for field in fields(args):
        flag, value = field.name.replace("_", "-"), getattr(args, field.name)
        if field.type is bool:
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        elif value is not None:
            flags.append(f"--{flag} {shlex.quote(str(value))}")
    return f"python {os.path.basename(__file__)} " + " ".join(flags)


def make_env(env_id: str, num_envs: int, capture_video: bool = False, run_name: str = "") -> gym.vector.VectorEnv:
    """num_envs copies of env_id that reset in the same step as an episode ends (its last obs is in info["final_obs"])
    and report each episode's return and length in info["episode"]."""
    autoreset = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    if capture_video:
        envs = gym.make_vec(env_id, num_envs, "sync", autoreset, render_mode="rgb_array")
        envs = gym.wrappers.vector.RecordVideo(envs, f"videos/{run_name}")
    else:
        envs = gym.make_vec(env_id, num_envs, "sync", autoreset)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


class Normalizer:
    """Running observation normalisation, (o − μ)/σ, and reward scaling, r/σ_R with σ_R the running std of the
    discounted return (Engstrom et al. 2020, "Implementation Matters in Deep RL"). Both are clipped to ±10."""

    def __init__(self, obs_dim: int, num_envs: int, gamma: float, norm_obs: bool, norm_reward: bool):
        self.norm_obs, self.norm_reward, self.gamma = norm_obs, norm_reward, gamma
        self.obs_stats = (np.zeros(obs_dim), np.ones(obs_dim), 1e-4)  # running (mean, variance, count)
        self.return_stats = (0.0, 1.0, 1e-4)
        self.discounted_return = np.zeros(num_envs)

    @staticmethod
    def merge(stats: tuple, batch: np.ndarray) -> tuple:
        """The (mean, variance, count) of the samples behind stats and those in batch (Chan et al. 1979)."""
        mean, var, count = stats
        delta, total = batch.mean(0) - mean, count + len(batch)
        m2 = var * count + batch.var(0) * len(batch) + delta**2 * count * len(batch) / total
        return mean + delta * len(batch) / total, m2 / total, total

    def obs(self, obs: np.ndarray, update: bool) -> np.ndarray:
        if not self.norm_obs:
            return obs
        if update:
            self.obs_stats = self.merge(self.obs_stats, obs)
        mean, var, _ = self.obs_stats
        return np.clip((obs - mean) / np.sqrt(var + 1e-8), -10, 10)

    def reward(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        if not self.norm_reward:
            return reward
        self.discounted_return = self.gamma * self.discounted_return + reward
        self.return_stats = self.merge(self.return_stats, self.discounted_return)
        self.discounted_return[done] = 0.0
        return np.clip(reward / np.sqrt(self.return_stats[1] + 1e-8), -10, 10)

    def state_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "discounted_return"}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def layer_init(layer: nn.Linear, gain: float = np.sqrt(2)) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class Agent(nn.Module):
    """The actor πθ(a|s) and the critic V(s): two separate tanh MLPs with 64 × 64 hidden units."""

    def __init__(self, obs_dim: int, action_space: gym.Space):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        act_dim = action_space.shape[0] if self.continuous else action_space.n
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), gain=1.0),
        )  # fmt: skip
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, act_dim), gain=0.01),
        )  # fmt: skip
        if self.continuous:
            self.actor_logstd = nn.Parameter(torch.zeros(act_dim))

    def policy_parameters(self) -> list[nn.Parameter]:
        """θ: the actor's weights and, for a Gaussian, its log σ."""
        return [p for name, p in self.named_parameters() if not name.startswith("critic.")]

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        """πθ(·|s): Categorical(softmax(logits)), or N(μθ(s), diag(σ²)) with a state-independent log σ."""
        if self.continuous:
            return Independent(Normal(self.actor(obs), self.actor_logstd.exp()), 1)
        return Categorical(logits=self.actor(obs))


def compute_gae(rewards, values, next_values, dones, gamma: float, gae_lambda: float) -> torch.Tensor:
    """Â_t = Σ_l (γλ)^l δ_{t+l} with δ_t = r_t + γ·V(s_{t+1}) − V(s_t), for (T, N) tensors, each column one env.

    next_values[t] is V of the true successor of step t: 0 if the episode terminated there, V(final obs) if it was
    truncated. dones[t] (terminated or truncated) ends the sum, so Â_t never reaches into the next episode."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] - values[t]  # δ_t = r_t + γV(s_{t+1}) − V(s_t)
        last = delta + gamma * gae_lambda * (1.0 - dones[t]) * last  # Â_t = δ_t + γλ·Â_{t+1}
        advantages[t] = last
    return advantages


def update_beta(beta: float, kl: float, target_kl: float) -> float:
    """β ← 2β if d > 1.5·d_targ; β ← β/2 if d < d_targ/1.5; else β (Schulman et al. 2017, §4)."""
    return beta * 2 if kl > 1.5 * target_kl else beta / 2 if kl < target_kl / 1.5 else beta


def rollout(envs, agent: Agent, normalizer: Normalizer, next_obs: torch.Tensor, num_steps: int):
    """Runs πθ for num_steps steps in each env. Returns (T, N, ...) tensors, the obs to continue from, and the
    (return, length) of each episode that ended.

    next_obs[t] is the true successor of obs[t]: where an episode ended, the env has already reset, so the successor
    is info["final_obs"], not the new episode's first obs. So no transition spans two episodes."""
    device, space = next_obs.device, envs.single_action_space
    obs = torch.zeros((num_steps, *next_obs.shape), device=device)
    next_obss = torch.zeros_like(obs)
    actions = torch.zeros((num_steps, envs.num_envs, *space.shape), device=device)
    logprobs, rewards, terminations, dones = (torch.zeros((num_steps, envs.num_envs), device=device) for _ in range(4))
    episodes = []
    for t in range(num_steps):
        obs[t] = next_obs
        with torch.no_grad():
            dist = agent.dist(next_obs)
            action = dist.sample()
            logprobs[t] = dist.log_prob(action)
        actions[t] = action
        env_action = action.cpu().numpy()
        if agent.continuous:  # the env gets the action clipped to its bounds; we learn from the one we sampled
            env_action = np.clip(env_action, space.low, space.high)
        raw_obs, reward, terminated, truncated, info = envs.step(env_action)
        done = terminated | truncated
        next_obs = torch.tensor(normalizer.obs(raw_obs, update=True), dtype=torch.float32, device=device)
        next_obss[t] = next_obs
        if done.any():  # those envs have reset already: their successor is the episode's final obs
            final_obs = normalizer.obs(np.stack(info["final_obs"][done]), update=False)
            next_obss[t, done] = torch.tensor(final_obs, dtype=torch.float32, device=device)
        rewards[t] = torch.tensor(normalizer.reward(reward, done), dtype=torch.float32, device=device)
        terminations[t] = torch.tensor(terminated, device=device)
        dones[t] = torch.tensor(done, device=device)
        if "episode" in info:
            episodes += [(info["episode"]["r"][i], info["episode"]["l"][i]) for i in np.flatnonzero(info["_episode"])]
    return obs, next_obss, actions, logprobs, rewards, terminations, dones, next_obs, episodes


def evaluate(model_path: str, env_id: str, episodes: int, device: torch.device) -> list[float]:
    """Returns of the saved policy's mean action (argmax if Discrete), with the training run's frozen obs statistics."""
    checkpoint = torch.load(model_path, map_location=device, weights_only=False)
    envs = make_env(env_id, 1)
    agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space).to(device)
    agent.load_state_dict(checkpoint["agent"])
    normalizer = Normalizer(envs.single_observation_space.shape[0], 1, 1.0, True, False)
    normalizer.load_state_dict(checkpoint["normalizer"])
    raw_obs, _ = envs.reset(seed=checkpoint["args"]["seed"] + 10_000)
    returns = []
    while len(returns) < episodes:
        with torch.no_grad():
            obs = torch.tensor(normalizer.obs(raw_obs, update=False), dtype=torch.float32, device=device)
            action = agent.dist(obs).mode.cpu().numpy()
        if agent.continuous:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        raw_obs, _, _, _, info = envs.step(action)
        if "episode" in info:
            returns.append(float(info["episode"]["r"][0]))
    envs.close()
    return returns


def main(args: Args) -> list[float]:
    """Trains and returns the episodic returns, in the order the episodes ended."""
    if error := check_args(args):
        raise SystemExit(f"{args.exp_name}: error: {error}")
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    command = reproduce_command(args)
    print(command)
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text("command", command)
    table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = pick_device(args.device)

    envs = make_env(args.env_id, args.num_envs, args.capture_video, run_name)
    obs_dim, continuous = envs.single_observation_space.shape[0], isinstance(envs.single_action_space, gym.spaces.Box)
    norm_obs, norm_reward = (continuous if flag is None else flag for flag in (args.norm_obs, args.norm_reward))
    normalizer = Normalizer(obs_dim, args.num_envs, args.gamma, norm_obs, norm_reward)
    agent = Agent(obs_dim, envs.single_action_space).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    batch_size = args.num_envs * args.num_steps
    num_iterations = max(args.total_timesteps // batch_size, 1)
    raw_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.tensor(normalizer.obs(raw_obs, update=True), dtype=torch.float32, device=device)
    global_step, start_time, beta = 0, time.time(), args.init_beta
    episodic_returns, recent = [], deque(maxlen=20)

    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
        obs, next_obss, actions, logprobs, rewards, terminations, dones, next_obs, episodes = rollout(
            envs, agent, normalizer, next_obs, args.num_steps
        )
        global_step += batch_size
        for r, length in episodes:
            writer.add_scalar("charts/episodic_return", r, global_step)
            writer.add_scalar("charts/episodic_length", length, global_step)
            episodic_returns.append(float(r))
            recent.append(float(r))

        with torch.no_grad():
            values = agent.value(obs)
            next_values = agent.value(next_obss) * (1.0 - terminations)  # V(s_{t+1}), 0 after termination
        advantages = compute_gae(rewards, values, next_values, dones, args.gamma, args.gae_lambda)
        returns = advantages + values

        b_obs = obs.reshape(batch_size, obs_dim)
        b_actions = actions.reshape(batch_size, *envs.single_action_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # ALGO LOGIC: K epochs of minibatch Adam on the policy objective L(θ) and the value loss
        old_agent = copy.deepcopy(agent).requires_grad_(False)  # π_old, for the exact KL
        clipfracs = []
        epochs = (torch.randperm(batch_size, device=device) for _ in range(args.update_epochs))
        for mb in (mb for perm in epochs for mb in perm.tensor_split(args.num_minibatches)):
            dist = agent.dist(b_obs[mb])
            logratio = dist.log_prob(b_actions[mb]) - b_logprobs[mb]
            ratio = logratio.exp()  # r = πθ(a|s)/π_old(a|s)
            with torch.no_grad():
                old_approx_kl = (-logratio).mean()
                approx_kl = ((ratio - 1) - logratio).mean()  # an unbiased, non-negative estimate of KL(π_old ‖ πθ)
                clipfracs.append(((ratio - 1.0).abs() > 0.2).float().mean().item())  # as PPO-clip with ε = 0.2
            mb_advantages = b_advantages[mb]
            mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            mb_kl = torch.distributions.kl_divergence(old_agent.dist(b_obs[mb]), dist)  # exact, per state
            policy_loss = -(ratio * mb_advantages - beta * mb_kl).mean()  # −(r·Â − β·KL)

            new_values = agent.value(b_obs[mb])
            value_loss = (new_values - b_returns[mb]) ** 2
            value_loss = 0.5 * value_loss.mean()
            entropy = dist.entropy().mean()
            loss = policy_loss - args.ent_coef * entropy + args.vf_coef * value_loss

            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
        with torch.no_grad():
            kl = torch.distributions.kl_divergence(old_agent.dist(b_obs), agent.dist(b_obs)).mean()

        explained_var = 1 - (b_returns - b_values).var() / b_returns.var()
        sps = int(global_step / (time.time() - start_time))
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        writer.add_scalar("losses/value_loss", value_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", policy_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy.item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var.item(), global_step)
        writer.add_scalar("losses/kl", kl.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("charts/beta", beta, global_step)
        if args.adapt_beta:
            beta = update_beta(beta, kl.item(), args.target_kl)
        mean_return = f"{np.mean(recent):8.1f}" if recent else "       -"
        print(f"step {global_step:>9,}/{args.total_timesteps:,} | return {mean_return} | SPS {sps:,}")

    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.model"
        torch.save({"agent": agent.state_dict(), "normalizer": normalizer.state_dict(), "args": vars(args)}, model_path)
        print(f"model saved to {model_path}")
        for r in evaluate(model_path, args.env_id, 10, device):
            writer.add_scalar("eval/episodic_return", r, global_step)
    envs.close()
    writer.close()
    return episodic_returns


if __name__ == "__main__":
    main(tyro.cli(Args))
