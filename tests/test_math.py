"""The math every script shares, function by function, against ground truth: GAE against its definition, the policy
heads against their closed forms, the NatureCNN and which networks share it, and the normaliser's statistics."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

# ---- GAE


def naive_gae(rewards, values, next_values, dones, gamma, lam):
    """Â_t = Σ_l (γλ)^l δ_{t+l}, summed term by term up to the end of t's episode or of the batch."""
    T, N = rewards.shape
    delta = rewards + gamma * next_values - values
    advantages = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            for l in range(T - t):
                advantages[t, n] += (gamma * lam) ** l * delta[t + l, n]
                if dones[t + l, n]:
                    break
    return advantages


def random_batch(T=20, N=3, seed=0):
    rng = np.random.default_rng(seed)
    dones = (rng.random((T, N)) < 0.2).astype(np.float64)
    terminations = dones * (rng.random((T, N)) < 0.5)
    next_values = rng.normal(size=(T, N)) * (1 - terminations)
    return rng.normal(size=(T, N)), rng.normal(size=(T, N)), next_values, dones


def gae(script, rewards, values, next_values, dones, gamma, lam):
    tensors = [torch.tensor(x) for x in (rewards, values, next_values, dones)]
    return script.compute_gae(*tensors, gamma, lam).numpy()


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_definition_across_episode_boundaries(script, gamma, lam):
    batch = random_batch()
    assert batch[3].sum(0).min() >= 1, "every env should cross an episode boundary"
    np.testing.assert_allclose(gae(script, *batch, gamma, lam), naive_gae(*batch, gamma, lam), rtol=1e-10, atol=1e-12)


def test_gae_lambda_0_is_td_error(script):
    rewards, values, next_values, dones = random_batch(seed=1)
    expected = rewards + 0.97 * next_values - values
    np.testing.assert_allclose(gae(script, rewards, values, next_values, dones, 0.97, 0.0), expected, atol=1e-12)


def test_gae_lambda_1_is_reward_to_go_minus_baseline(script):
    """One episode of T steps that terminates at the end: Â_t = Σ_{k≥t} γ^{k−t} r_k − V(s_t)."""
    T, gamma = 15, 0.95
    rng = np.random.default_rng(2)
    rewards, values = rng.normal(size=(T, 1)), rng.normal(size=(T, 1))
    next_values = np.vstack([values[1:], [[0.0]]])
    dones = np.zeros((T, 1))
    dones[-1] = 1
    reward_to_go = np.array([sum(gamma ** (k - t) * rewards[k, 0] for k in range(t, T)) for t in range(T)])
    advantages = gae(script, rewards, values, next_values, dones, gamma, 1.0)
    np.testing.assert_allclose(advantages[:, 0], reward_to_go - values[:, 0], atol=1e-12)


def test_gae_of_a_one_step_rollout_is_its_td_error(script):
    """--num-steps 1, which every script allows (the PPO scripts too, with several envs): Â = r + γ·V(s') − V(s)."""
    rewards, values, next_values, dones = (x[:1] for x in random_batch(seed=3))
    expected = rewards + 0.9 * next_values - values
    np.testing.assert_allclose(gae(script, rewards, values, next_values, dones, 0.9, 0.5), expected, atol=1e-12)


# ---- The policy heads and the image encoder


def test_categorical_head_matches_closed_form(script):
    agent = script.Agent(4, gym.spaces.Discrete(3))
    obs = torch.randn(5, 4)
    logits = agent.actor(obs)
    p = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    dist = agent.dist(obs)
    actions = torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(dist.log_prob(actions), torch.log(p[torch.arange(5), actions]))
    torch.testing.assert_close(dist.entropy(), -(p * torch.log(p)).sum(-1))


def test_gaussian_head_matches_closed_form(script):
    agent = script.Agent(4, gym.spaces.Box(-1.0, 1.0, (2,)))
    with torch.no_grad():
        agent.actor_logstd.copy_(torch.tensor([-0.5, 0.3]))
    obs, actions = torch.randn(5, 4), torch.randn(5, 2)
    mu, log_sigma = agent.actor(obs), agent.actor_logstd
    expected = (-0.5 * ((actions - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)
    dist = agent.dist(obs)
    torch.testing.assert_close(dist.log_prob(actions), expected)
    torch.testing.assert_close(dist.entropy(), (0.5 * math.log(2 * math.pi * math.e) + log_sigma).sum().expand(5))
    assert any(p is agent.actor_logstd for p in agent.policy_parameters())
    assert not any(p is q for p in agent.policy_parameters() for q in agent.critic.parameters())


@pytest.mark.parametrize("obs_dim", [4, (3, 36, 36)], ids=["flat", "image"])
def test_layers_are_orthogonal_with_their_gains_and_zero_biases(script, obs_dim):
    """Huang et al. 2022's initialisation: every layer's weight is orthogonal, scaled by its gain (√2 for the hidden
    layers and the NatureCNN's, 1 for the critic's output, 0.01 for the actor's), every bias 0; on an image too."""
    torch.manual_seed(0)
    agent = script.Agent(obs_dim, gym.spaces.Discrete(3))
    heads = {"critic": 1.0, "actor": 0.01}
    layers = [m for m in agent.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    outputs = {id([*getattr(agent, part).modules()][-1]): gain for part, gain in heads.items()}
    assert len(outputs) == 2 and len(layers) == (10 if obs_dim != 4 and not script.__name__.startswith("ppo") else 6)
    for layer in layers:
        gain = outputs.get(id(layer), math.sqrt(2))
        weight = layer.weight.detach().flatten(1)  # (out, in·k·k): orthogonal rows, or columns where out > in·k·k
        gram = weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight
        torch.testing.assert_close(gram, gain**2 * torch.eye(len(gram)), rtol=0, atol=1e-5 * gain**2)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_log_std_init_reaches_the_agent(script):
    envs = script.make_env("Pendulum-v1", 1)
    agent, _ = script.build(script.Args(env_id="Pendulum-v1", log_std_init=-0.5), envs, torch.device("cpu"))
    assert torch.equal(agent.actor_logstd.detach(), torch.tensor([-0.5]))
    assert torch.equal(script.Agent(3, envs.single_action_space).actor_logstd.detach(), torch.tensor([0.0]))


def test_nature_cnn_reads_either_layout_and_any_leading_dims(script):
    """The same weights on an (H, W, C) image and on its (C, H, W) transpose give the same 512 features, for a batch
    and for (T, N) leading dims alike, and the network sees pixels / 255."""
    torch.manual_seed(0)
    hwc, chw = script.NatureCNN((36, 40, 3)), script.NatureCNN((3, 36, 40))
    assert hwc.channels_last and not chw.channels_last
    chw.load_state_dict(hwc.state_dict())
    images = torch.randint(0, 256, (2, 3, 36, 40, 3), dtype=torch.uint8)
    out = hwc(images)
    assert out.shape == (2, 3, 512)
    torch.testing.assert_close(out, chw(images.permute(0, 1, 4, 2, 3)))
    torch.testing.assert_close(out[1, 2], hwc.net(images[1, 2].permute(2, 0, 1)[None].float() / 255)[0])
    conv = [m for m in hwc.net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in conv] == [(32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)),
                                                                        (64, (3, 3), (1, 1))]  # fmt: skip
    assert [m.out_features for m in hwc.net if isinstance(m, torch.nn.Linear)] == [512]


def test_pg_npg_and_trpo_give_actor_and_critic_an_encoder_each_and_ppo_shares_one(script):
    """pg, npg and trpo: θ, the policy's parameters, holds the actor's encoder and none of the critic's, so that the
    critic's regression never moves π. The PPO scripts: one encoder, whose parameters both losses train."""
    agent = script.Agent((4, 84, 84), gym.spaces.Discrete(6))
    policy = {id(p) for p in agent.policy_parameters()}
    critic = {id(p) for p in agent.critic.parameters()}
    cnns = [m for m in agent.modules() if isinstance(m, script.NatureCNN)]
    if script.__name__ in ("ppo_clip", "ppo_kl"):
        assert len(cnns) == 1 and {id(p) for p in cnns[0].parameters()} <= policy
        obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
        dist, value = agent.dist_and_value(obs)
        torch.testing.assert_close(dist.logits, agent.dist(obs).logits)
        torch.testing.assert_close(value, agent.value(obs))
        (value.sum() + dist.logits.sum()).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cnns[0].parameters())
    else:
        assert len(cnns) == 2
        assert {id(p) for p in agent.actor.parameters()} == policy and not policy & critic


# ---- The normaliser


def test_normalizer_matches_batch_statistics(script):
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(50, 4, 3))
    normalizer = script.Normalizer(3, 4, 0.99, True, False)
    for batch in data:
        normalizer.obs(batch, update=True)
    flat = data.reshape(-1, 3)
    mean, var = normalizer.stats["obs"].mean, normalizer.stats["obs"].var
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-4)
    np.testing.assert_allclose(var, flat.var(0), rtol=1e-4)
    np.testing.assert_allclose(normalizer.obs(data[-1], update=False), (data[-1] - mean) / np.sqrt(var + 1e-8))


def test_reward_scale_is_the_std_of_the_discounted_return(script):
    """r is divided by the std of all discounted returns G_t = r_t + γ·G_{t−1} so far; G restarts after a done."""
    rng = np.random.default_rng(0)
    rewards, dones = rng.normal(1.0, 1.0, size=(300, 2)), rng.random((300, 2)) < 0.05
    normalizer = script.Normalizer(1, 2, 0.9, False, True)
    scaled = [normalizer.reward(r, d) for r, d in zip(rewards, dones, strict=True)]
    returns, g = [], np.zeros(2)
    for r, d in zip(rewards, dones, strict=True):
        g = 0.9 * g + r
        returns.append(g.copy())
        g[d] = 0.0
    returns = np.array(returns)
    mean, var = normalizer.stats["return"].mean, normalizer.stats["return"].var
    np.testing.assert_allclose([mean, var], [returns.mean(), returns.var()], rtol=1e-3)
    np.testing.assert_allclose(scaled[-1], rewards[-1] / np.sqrt(returns.var() + 1e-8), rtol=1e-3)


# ---- The optimizer step and the metrics every script logs


def test_guarded_step_clips_the_global_gradient_norm(script):
    """Two parameters with gradients 3 and 4, a global norm of 5, clipped to 1: plain SGD at lr 1 moves them by −0.6
    and −0.8 (clipped one by one, each would move by −1), and without a limit by the whole gradient; a non-finite loss
    moves nothing and returns False."""
    a, b = torch.nn.Parameter(torch.zeros(())), torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([a, b], lr=1.0)

    def moved() -> list[float]:
        return [a.item(), b.item()]

    assert script.guarded_step(optimizer, 3 * a + 4 * b, max_grad_norm=1.0)
    assert moved() == pytest.approx([-0.6, -0.8])
    assert not script.guarded_step(optimizer, (3 * a + 4 * b) * torch.nan, max_grad_norm=1.0)
    assert moved() == pytest.approx([-0.6, -0.8])
    assert script.guarded_step(optimizer, 3 * a + 4 * b)
    assert moved() == pytest.approx([-3.6, -4.8])


def test_shared_metrics_are_the_value_loss_entropy_and_explained_variance(script):
    """Over the batch: (V_new − R̂)² of the new values, the new policy's entropy, and 1 − Var(R̂ − V)/Var(R̂) of the
    values before the update (NaN where R̂ does not vary)."""
    returns, values = torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([1.5, 1.5, 3.5, 5.0])
    zeros = torch.zeros(4)
    batch = script.Batch(zeros, zeros, zeros, returns - values, returns, values, None)
    uniform = torch.distributions.Categorical(logits=torch.zeros(4, 3))
    metrics = script.shared_metrics(batch, uniform, torch.tensor([1.0, 2.0, 3.0, 5.0]))
    assert metrics["losses/value_loss"].item() == pytest.approx(0.25)
    assert metrics["losses/entropy"].item() == pytest.approx(math.log(3))
    explained = 1 - np.var([-0.5, 0.5, -0.5, 1.0], ddof=1) / np.var([1.0, 2.0, 3.0, 6.0], ddof=1)
    assert float(metrics["losses/explained_variance"]) == pytest.approx(explained) and explained > 0.5
    flat = script.Batch(zeros, zeros, zeros, zeros, torch.ones(4), values, None)
    assert math.isnan(script.shared_metrics(flat, uniform, values)["losses/explained_variance"])
