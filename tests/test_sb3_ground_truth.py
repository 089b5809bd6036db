"""Ground truth from Stable-Baselines3 (installed by requirements-dev.txt, for the benchmarks' peers): from SB3 PPO's
initial weights and its own rollout, each script's rollout, normaliser and GAE give SB3's numbers, and ppo_clip's
update, at SB3's settings and with the same minibatch order, moves every parameter as SB3's PPO.train() does, in one
step and in 10 epochs of 8 minibatches, where the clip binds.

Pendulum-v1 truncates at 200 steps, so the 512 steps hold two time-limit bootstraps; actions outside the bounds are
stored unclipped on both sides."""

import copy
import importlib

import numpy as np
import pytest
import torch
from conftest import unavailable

GAMMA, LAMBDA, STEPS, SEED = 0.99, 0.95, 512, 3
# ours ← SB3's MlpPolicy: the actor and the critic are separate 64-64 tanh MLPs on both sides
NAMES = {
    "actor.0.weight": "mlp_extractor.policy_net.0.weight",
    "actor.0.bias": "mlp_extractor.policy_net.0.bias",
    "actor.2.weight": "mlp_extractor.policy_net.2.weight",
    "actor.2.bias": "mlp_extractor.policy_net.2.bias",
    "actor.4.weight": "action_net.weight",
    "actor.4.bias": "action_net.bias",
    "critic.0.weight": "mlp_extractor.value_net.0.weight",
    "critic.0.bias": "mlp_extractor.value_net.0.bias",
    "critic.2.weight": "mlp_extractor.value_net.2.weight",
    "critic.2.bias": "mlp_extractor.value_net.2.bias",
    "critic.4.weight": "value_net.weight",
    "critic.4.bias": "value_net.bias",
    "actor_logstd": "log_std",
}


@pytest.fixture(scope="module")
def sb3(tmp_path_factory):
    """SB3 PPO at its defaults (n_steps 512) on Pendulum-v1 under VecNormalize: its weights before any update, and the
    buffer of one rollout (SB3's own normalised observations, sampled actions, advantages and returns)."""
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.logger import configure
        from stable_baselines3.common.vec_env import VecNormalize
    except ImportError:
        unavailable("stable_baselines3 is not installed (pip install -r requirements-dev.txt)")
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=SEED), gamma=GAMMA)
    model = PPO("MlpPolicy", env, n_steps=STEPS, batch_size=64, seed=SEED, device="cpu")
    model.set_logger(configure(str(tmp_path_factory.mktemp("sb3")), []))  # not a folder of its own under /tmp
    weights = copy.deepcopy(model.policy.state_dict())
    optimizer_state = copy.deepcopy(model.policy.optimizer.state_dict())
    _, callback = model._setup_learn(STEPS, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=STEPS)
    buffer = model.rollout_buffer
    as_tensor = lambda x: torch.as_tensor(x[:, 0], dtype=torch.float32)  # noqa: E731
    return {
        "model": model,
        "env": env,
        "weights": weights,
        "optimizer_state": optimizer_state,
        "obs": as_tensor(buffer.observations),
        "actions": as_tensor(buffer.actions),
        "values": as_tensor(buffer.values),
        "logprobs": as_tensor(buffer.log_probs),
        "advantages": as_tensor(buffer.advantages),
        "returns": as_tensor(buffer.returns),
    }


def agent_with_sb3_weights(module, sb3):
    agent = module.Agent(3, sb3["env"].action_space, log_std_init=0.0)
    agent.load_state_dict({ours: sb3["weights"][theirs].clone() for ours, theirs in NAMES.items()}, strict=True)
    return agent


class Replay:
    """The agent, whose dist().sample() returns SB3's sampled actions in order: the script's rollout() then steps the
    env as SB3 did."""

    continuous = True

    def __init__(self, agent, actions):
        self.agent, self.actions = agent, iter(actions)

    def dist(self, obs):
        dist = self.agent.dist(obs)
        dist.sample = lambda: next(self.actions)[None]
        return dist


def test_rollout_normaliser_and_gae_give_sb3s_numbers(script, sb3):
    agent = agent_with_sb3_weights(script, sb3)
    envs = script.make_env("Pendulum-v1", 1)
    normalizer = script.Normalizer(3, 1, GAMMA, norm_obs=True, norm_reward=True)
    first_obs = normalizer.obs_tensor(envs.reset(seed=SEED)[0], torch.device("cpu"))
    data = script.rollout(envs, Replay(agent, sb3["actions"]), normalizer, first_obs, STEPS)
    envs.close()
    assert sum(truncated for _, _, truncated in data.episodes) == 2  # two time limits inside the rollout
    assert (sb3["actions"].abs() > 2).any()  # some samples fall outside Pendulum's bounds, ±2
    torch.testing.assert_close(data.actions[:, 0], sb3["actions"], rtol=0, atol=0)  # stored as sampled, unclipped
    torch.testing.assert_close(data.obs[:, 0], sb3["obs"], rtol=0, atol=1e-6)
    torch.testing.assert_close(data.last_obs[0], torch.as_tensor(sb3["model"]._last_obs[0]).float(), rtol=0, atol=1e-6)
    for ours, theirs in (("obs", sb3["env"].obs_rms), ("return", sb3["env"].ret_rms)):
        np.testing.assert_allclose(normalizer.stats[ours].mean, theirs.mean, rtol=1e-6)
        np.testing.assert_allclose(normalizer.stats[ours].var, theirs.var, rtol=1e-6)
    torch.testing.assert_close(data.logprobs[:, 0], sb3["logprobs"], rtol=0, atol=1e-5)
    batch = script.make_batch(agent, data, GAMMA, LAMBDA)
    torch.testing.assert_close(batch.values, sb3["values"], rtol=0, atol=1e-5)
    # |Â| reaches about 10 here: 1e-4 is float32 rounding, and far below a missed bootstrap's γ·V(final obs)
    torch.testing.assert_close(batch.advantages, sb3["advantages"], rtol=0, atol=1e-4)
    torch.testing.assert_close(batch.returns, sb3["returns"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("epochs, minibatches", [(1, 1), (10, 8)])  # at 10 epochs the clip binds
def test_ppo_clip_update_moves_every_parameter_as_sb3_ppo_does(sb3, epochs, minibatches, monkeypatch):
    ppo_clip = importlib.import_module("ppo_clip")
    from stable_baselines3.ppo import ppo as sb3_ppo

    order = np.random.default_rng(0)
    permutations = [order.permutation(STEPS) for _ in range(epochs)]
    model, policy = sb3["model"], sb3["model"].policy
    policy.load_state_dict(sb3["weights"])
    policy.optimizer.load_state_dict(sb3["optimizer_state"])
    model.n_epochs, model.batch_size = epochs, STEPS // minibatches
    with monkeypatch.context() as patch:
        queue = iter(permutations)
        patch.setattr(sb3_ppo.np.random, "permutation", lambda n: next(queue).copy())
        model.train()
    theirs = {ours: policy.state_dict()[name] for ours, name in NAMES.items()}

    agent = agent_with_sb3_weights(ppo_clip, sb3)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    # SB3's value loss is F.mse_loss, ppo_clip's ½·mse: vf_coef 1.0 here is SB3's 0.5
    args = ppo_clip.Args(update_epochs=epochs, num_minibatches=minibatches, vf_coef=1.0, max_grad_norm=0.5)
    with torch.no_grad():
        old_dist = agent.dist(sb3["obs"])
    batch = ppo_clip.Batch(
        sb3["obs"],
        sb3["actions"],
        sb3["logprobs"],
        sb3["advantages"],
        sb3["returns"],
        sb3["values"],
        old_dist,
    )
    with monkeypatch.context() as patch:
        queue = iter(permutations)
        patch.setattr(torch, "randperm", lambda n, device=None: torch.from_numpy(next(queue).copy()))
        metrics = ppo_clip.update(agent, optimizer, batch, args)
    assert epochs == 1 or metrics["losses/clipfrac"] > 0  # the clipped surrogate is tested where it clips
    moved = max((theirs[name] - sb3["weights"][NAMES[name]]).abs().max() for name in NAMES)
    assert moved > 1e-4  # it moved (Adam: about lr a step), so this compares two updates, not two untouched networks
    for name, parameter in agent.state_dict().items():
        torch.testing.assert_close(parameter, theirs[name], rtol=0, atol=1e-6, msg=name)
