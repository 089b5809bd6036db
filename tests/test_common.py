"""What every script shares: GAE, the rollout over gymnasium vector envs, the policy heads, the CLI, seeding, errors.

Each test runs against every script that exists, since each script carries its own copy of this code."""

import importlib
import math
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from conftest import SCRIPTS, UNSUPPORTED, command_line, only_run, read_scalars, tiny_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


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


def rollout(script, env_id, num_envs, num_steps, seed=0, critic_bias=None):
    """A real rollout of the script's untrained agent in the script's own vector env."""
    torch.manual_seed(seed)
    envs = script.make_env(env_id, num_envs)
    agent = script.Agent(envs.single_observation_space.shape[0], envs.single_action_space)
    if critic_bias is not None:  # a critic that outputs the constant critic_bias everywhere
        torch.nn.init.zeros_(agent.critic[-1].weight)
        torch.nn.init.constant_(agent.critic[-1].bias, critic_bias)
    normalizer = script.Normalizer(envs.single_observation_space.shape[0], num_envs, 0.99, False, False)
    raw_obs, _ = envs.reset(seed=seed)
    next_obs = torch.tensor(raw_obs, dtype=torch.float32)
    data = script.rollout(envs, agent, normalizer, next_obs, num_steps)
    envs.close()
    return agent, data


def test_no_transition_spans_two_episodes(script):
    """Counter-v0's obs is [episode id, step]: every stored (obs, next_obs) pair must be one step of one episode."""
    _, data = rollout(script, "Counter-v0", 3, 60)
    obs, next_obss, terminations, dones = data.obs, data.next_obs, data.terminations, data.dones
    assert dones.sum() >= 10 and terminations.sum() >= 3 and (dones - terminations).sum() >= 3
    np.testing.assert_array_equal(next_obss[..., 0], obs[..., 0])  # same episode
    np.testing.assert_array_equal(next_obss[..., 1], obs[..., 1] + 1)  # the next step of it
    # After a done step, the env continues from a fresh episode's first observation.
    assert (obs[1:, :, 1][dones[:-1].bool()] == 0).all()
    assert (obs[1:, :, 0][dones[:-1].bool()] != obs[:-1, :, 0][dones[:-1].bool()]).all()
    # Truncation (the 12-step time limit) is a done but not a termination.
    truncated = (dones - terminations).bool()
    assert (next_obss[..., 1][truncated] == 12).all()
    assert len(data.episodes) == int(dones.sum())
    assert [was_truncated for _, _, was_truncated in data.episodes] == truncated[dones.bool()].tolist()


def test_final_obs_is_normalised_with_the_statistics_of_its_step(script):
    """With observation normalisation on, the successor at an episode's end is info["final_obs"] normalised with the
    running statistics as they stand after that step's observations, and final_obs itself never enters them: checked
    against a RunningMeanStd fed here with the reset and step observations only."""
    from gymnasium.wrappers.utils import RunningMeanStd

    torch.manual_seed(0)
    envs = script.make_env("Counter-v0", 3)
    agent = script.Agent(2, envs.single_action_space)
    normalizer = script.Normalizer(2, 3, 0.99, True, False)
    stats, step = RunningMeanStd(shape=(2,)), envs.step
    expected_obs, expected_next, stale_next = [], [], []  # stale: with the statistics of the step before

    def normalise(x):
        return np.clip((x - stats.mean) / np.sqrt(stats.var + 1e-8), -10, 10)

    def watched_step(actions):
        raw_obs, reward, terminated, truncated, info = step(actions)
        done = terminated | truncated
        final = np.stack([info["final_obs"][i] if done[i] else raw_obs[i] for i in range(3)])
        stale_next.append(normalise(final))
        stats.update(raw_obs)
        expected_obs.append(normalise(raw_obs))
        expected_next.append(normalise(final))
        return raw_obs, reward, terminated, truncated, info

    envs.step = watched_step
    raw_obs, _ = envs.reset(seed=0)
    stats.update(raw_obs)
    first = torch.tensor(normalise(raw_obs), dtype=torch.float32)
    data = script.rollout(envs, agent, normalizer, normalizer.obs_tensor(raw_obs, torch.device("cpu")), 40)
    envs.close()
    done, truncated = data.dones.bool(), (data.dones - data.terminations).bool()
    assert done.sum() >= 6 and truncated.sum() >= 2
    expected_obs, expected_next, stale_next = (
        torch.tensor(np.stack(x), dtype=torch.float32) for x in (expected_obs, expected_next, stale_next)
    )
    torch.testing.assert_close(data.obs, torch.cat([first[None], expected_obs[:-1]]))
    torch.testing.assert_close(data.next_obs, expected_next)
    assert ((data.next_obs - stale_next)[done].abs() > 1e-3).all(), "the statistics move at every step"


def test_truncated_constant_reward_has_zero_advantage(script):
    """Reward 1 forever, truncated every 7 steps, with the true V = 1/(1 − γ): the script's make_batch must give Â = 0
    everywhere, the truncated steps' too. Treating truncation as termination (V(s') = 0 there) gives Â = −γ·V at each
    truncated step, and a bootstrap from the reset obs instead of the final one is caught by test_gae_sees_the_true_
    successor_of_every_step."""
    gamma = 0.9
    agent, data = rollout(script, "Constant-v0", 2, 21, critic_bias=1 / (1 - gamma))
    assert data.dones.sum() == 6 and data.terminations.sum() == 0
    batch = script.make_batch(agent, data, gamma, 0.95)
    torch.testing.assert_close(batch.advantages, torch.zeros_like(batch.advantages), atol=1e-4, rtol=0)
    torch.testing.assert_close(batch.returns, torch.full_like(batch.returns, 1 / (1 - gamma)))


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


def test_log_std_init_reaches_the_agent(script):
    envs = script.make_env("Pendulum-v1", 1)
    agent, _ = script.build(script.Args(env_id="Pendulum-v1", log_std_init=-0.5), envs, torch.device("cpu"))
    assert torch.equal(agent.actor_logstd.detach(), torch.tensor([-0.5]))
    assert torch.equal(script.Agent(3, envs.single_action_space).actor_logstd.detach(), torch.tensor([0.0]))


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


def test_help(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(script.Args, args=["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--env-id" in out and "--total-timesteps" in out and "--eval-checkpoint" in out


REQUIRED_KEYS = {
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/SPS",
    "losses/value_loss",
    "losses/policy_loss",
    "losses/entropy",
    "losses/explained_variance",
    "losses/kl",
}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_short_run_writes_tensorboard_keys(script, in_tmp, env_id):
    script.main(tiny_args(script, env_id=env_id, total_timesteps=512, num_steps=128))
    run = only_run()
    assert run.name.startswith(f"{env_id}__{script.__name__}__1__")
    assert REQUIRED_KEYS <= set(read_scalars(run))
    events = EventAccumulator(str(run))
    events.Reload()
    assert "hyperparameters" in {tag.split("/")[0] for tag in events.Tags()["tensors"]}


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


@pytest.mark.parametrize("env_id", ["Pendulum-v1"])
def test_same_seed_same_run(script, in_tmp, env_id):
    """The same returns, weights, normaliser statistics and logs from the same seed; other weights from another. On
    Pendulum-v1, where the normaliser is on and the Gaussian samples; benchmarks/fingerprint.py covers CartPole-v1."""
    first, returns_first, logs_first = train_and_load(script, env_id=env_id, seed=3)
    second, returns_second, logs_second = train_and_load(script, env_id=env_id, seed=3)
    other, *_ = train_and_load(script, env_id=env_id, seed=4, total_timesteps=256)  # one update is enough to differ
    assert returns_first == returns_second and len(returns_first) > 0
    assert logs_first == logs_second and len(logs_first["losses/kl"]) == 2
    for name, weight in first["agent"].items():
        assert torch.equal(weight, second["agent"][name]), name
    assert not all(torch.equal(w, other["agent"][name]) for name, w in first["agent"].items())
    for name, stats in first["normalizer"].items():
        assert all(torch.equal(stat, second["normalizer"][name][key]) for key, stat in stats.items()), name


def test_evaluation_reuses_training_obs_statistics(script, in_tmp):
    """evaluate() must give what the saved policy gets on observations normalised by the saved statistics."""
    checkpoint, *_ = train_and_load(script, env_id="Pendulum-v1")
    mean, var, count = (checkpoint["normalizer"]["obs"][k].numpy() for k in ("mean", "var", "count"))
    assert checkpoint["args"]["norm_obs"] and count > 500 and np.abs(mean).max() > 1e-3
    agent = script.Agent(3, gym.make("Pendulum-v1").action_space)
    agent.load_state_dict(checkpoint["agent"])
    normalizer = script.Normalizer(3, 2, 0.99, True, True)
    normalizer.load_state_dict(checkpoint["normalizer"])
    envs = script.make_env("Pendulum-v1", 1, time_limit=script.EVAL_TIME_LIMIT)
    (evaluated,) = script.evaluate(agent, normalizer, envs, 1, seed=5)
    envs.close()
    assert normalizer.stats["obs"].count == count, "evaluation must not update the statistics"

    def replay(mean, var):
        env = gym.make("Pendulum-v1")
        raw, _ = env.reset(seed=5)
        total, done = 0.0, False
        while not done:
            obs = torch.tensor(np.clip((raw - mean) / np.sqrt(var + 1e-8), -10, 10), dtype=torch.float32)
            with torch.no_grad():
                action = agent.dist(obs).mean.numpy().clip(-2.0, 2.0)
            raw, reward, terminated, truncated, _ = env.step(action)
            total, done = total + reward, terminated or truncated
        return total

    assert evaluated == pytest.approx(replay(mean, var), rel=1e-5)
    assert evaluated != pytest.approx(replay(np.zeros(3), np.ones(3)), rel=1e-3)


BAD_ARGS = [
    (dict(env_id="NoSuchEnv-v0"), "--env-id NoSuchEnv-v0"),
    *[(dict(env_id=env_id), expected) for env_id, (_, expected) in UNSUPPORTED.items()],
    (dict(env_id="FrozenLake-v1"), "observation space Discrete(16)"),
    (dict(total_timesteps=0), "--total-timesteps"),
    (dict(num_envs=-1), "--num-envs"),
    (dict(num_steps=0), "--num-steps"),
    (dict(num_envs=1, num_steps=40, num_minibatches=41), "--num-minibatches"),
    (dict(num_envs=1, num_steps=40, num_minibatches=0), "--num-minibatches"),
    (dict(gamma=0.0), "--gamma"),
    (dict(gamma=1.01), "--gamma"),
    (dict(gae_lambda=-0.1), "--gae-lambda"),
    (dict(gae_lambda=1.5), "--gae-lambda"),
    (dict(device="tpu"), "--device"),
    (dict(eval_episodes=0), "--eval-episodes"),
    (dict(log_std_init=math.nan), "--log-std-init"),
    (dict(capture_video=True), "moviepy"),  # moviepy is not installed here: the message says what to install
]


@pytest.mark.parametrize("overrides, expected", BAD_ARGS)
def test_bad_input_is_refused_before_training(script, in_tmp, overrides, expected):
    args = script.Args(**overrides)
    assert expected in script.check_args(args)
    with pytest.raises(SystemExit) as exit_info:
        script.main(args)
    assert str(exit_info.value) == f"{script.__name__}: error: {script.check_args(args)}"
    assert not (in_tmp / "runs").exists()


RATES = ("learning_rate", "vf_learning_rate", "max_grad_norm", "cg_damping")
SCRIPT_RATES = [(s, r) for s in SCRIPTS for r in RATES if hasattr(importlib.import_module(s).Args, r)]


@pytest.mark.parametrize("name, rate", SCRIPT_RATES, ids=[f"{s}-{r}" for s, r in SCRIPT_RATES])
@pytest.mark.parametrize("value", [0.0, -0.5])
def test_non_positive_rates_are_refused(name, rate, value):
    script = importlib.import_module(name)
    assert f"--{rate.replace('_', '-')}" in script.check_args(script.Args(**{rate: value}))


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_unavailable_device_is_refused(script, device):
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    message = script.check_args(script.Args(device=device))
    assert (message is None) if available else (f"--device must be one of auto, cpu here, got {device}" == message)


def test_good_input_is_accepted(script):
    assert script.check_args(script.Args()) is None
    assert script.check_args(script.Args(env_id="Pendulum-v1", gamma=1.0, gae_lambda=0.0)) is None


@pytest.mark.parametrize("name", ["pg"])  # the entry point that prints check_args's message is the same in all five
@pytest.mark.parametrize("flags, expected", [(["--env-id", "Blackjack-v1", "--gamma", "1"], "Tuple")])
def test_cli_error_is_one_line_without_traceback(name, flags, expected, capsys):
    code = command_line(name, *flags)  # an exception other than SystemExit, a traceback, propagates and fails here
    assert isinstance(code, str) and "\n" not in code, "Python prints a str code as one line on stderr and exits with 1"
    assert code.startswith(f"{name}: error: ") and expected in code
    assert capsys.readouterr().err == "", "nothing else reaches stderr"
