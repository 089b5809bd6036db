"""gymnasium's semantics as the scripts read them: same-step autoreset and info["final_obs"], termination against
truncation, the episode statistics, unbounded actions, and images and Atari (uint8 frames, scores, clipped rewards)."""

import dataclasses
import importlib
import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import (
    PLUMBING,
    ConstantEnv,
    PayEnv,
    events,
    only_run,
    saved_checkpoint,
    tiny_args,
    unavailable,
)

import ppo_clip

# ---- Vector envs: same-step autoreset, final_obs, termination against truncation


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


@pytest.mark.parametrize("env_id", ["Pay-v0", "BoxPay-v0"], ids=["discrete", "box"])
def test_each_logged_episode_is_the_env_s_own_return_and_length(script, env_id, in_tmp, capsys):
    """Pay-v0 pays 0.5 + 0.1·t at step t, so an episode's return is not its length, and records every episode it
    ends. In the order they ended, main logs each one's return and length at the step of the iteration it ended in,
    returns the returns, and prints the mean of the last 20 on each iteration's line; on Box actions, where the rewards
    it learns from are scaled, the figures are still the env's own. The vector RecordEpisodeStatistics of gymnasium
    1.1–1.3 lost the first step of each episode after the first under same-step autoreset: one step short, 0.5 less."""
    PayEnv.ended.clear()
    batch = 2 * 64
    returns = script.main(tiny_args(script, env_id=env_id, total_timesteps=3 * batch, num_envs=2, num_steps=64))
    scalars = events(only_run())
    ended = sorted(PayEnv.ended, key=lambda episode: (episode[1], episode[0]))  # by step, then env, as rollout
    truth = [(batch * -(-steps // 64), paid, length) for _, steps, paid, length, _ in ended]
    assert len(truth) >= 2 * 3 * 8 and len({length for *_, length in truth}) >= 5
    assert any(truncated for *_, truncated in ended) and not all(truncated for *_, truncated in ended)
    logged = [(step, r, l) for (step, r), (_, l) in zip(scalars["charts/episodic_return"],
                                                        scalars["charts/episodic_length"], strict=True)]  # fmt: skip
    assert [(step, length) for step, _, length in logged] == [(step, length) for step, _, length in truth]
    assert [r for _, r, _ in logged] == pytest.approx([paid for _, paid, _ in truth], rel=1e-6)
    assert returns == pytest.approx([paid for _, paid, _ in truth], rel=1e-6)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    for iteration, line in enumerate(lines, 1):
        so_far = [paid for step, paid, _ in truth if step <= iteration * batch][-20:]
        assert float(line.split("|")[1].removeprefix(" return")) == pytest.approx(np.mean(so_far), abs=0.051), line
    assert len(lines) == 3


def test_infinite_action_bounds_are_not_clipped(script, in_tmp, monkeypatch):
    sent = []
    step = gym.vector.SyncVectorEnv.step
    monkeypatch.setattr(
        gym.vector.SyncVectorEnv, "step", lambda self, actions: sent.append(actions) or step(self, actions)
    )
    args = tiny_args(script, env_id="InfiniteBoxActions-v0", total_timesteps=256, num_steps=64, save_model=True)
    script.main(dataclasses.replace(args, log_std_init=0.0))
    actions = np.concatenate(sent)
    # The N(0, 1) samples (σ = 1), as drawn: clipped to ±1 their std would be 0.72, squashed by tanh 0.63, and neither
    # leaves ±1
    assert np.isfinite(actions).all() and actions.std() > 0.9 and np.abs(actions).max() > 2
    assert all(torch.isfinite(w).all() for w in saved_checkpoint()["agent"].values())


# ---- Images and Atari


ALE = importlib.util.find_spec("ale_py") and importlib.util.find_spec("cv2")


def watch_rollouts(script, monkeypatch):
    batches, rollout = [], script.rollout
    monkeypatch.setattr(script, "rollout", lambda *a, **k: batches.append(rollout(*a, **k)) or batches[-1])
    return batches


def test_images_are_stored_as_uint8_and_not_normalised(script, in_tmp, monkeypatch):
    """On Box actions, where main's defaults scale rewards and would normalise flat observations, an image stays as
    it is: its main keeps --norm-obs off (build refuses it on images), and the rollout stores raw uint8 pixels."""
    batches = watch_rollouts(script, monkeypatch)
    script.main(tiny_args(script, env_id="BoxPixel-v0", num_steps=32, total_timesteps=64, save_model=True))
    data = batches[0]
    assert data.obs.dtype == data.next_obs.dtype == torch.uint8 and data.obs.shape == (32, 2, 36, 36, 3)
    assert set(data.obs.unique().tolist()) == {0, 255}, "raw pixels, neither scaled nor normalised"
    (path,) = Path("runs").glob("*/*.model")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["args"]["norm_obs"] is False and checkpoint["args"]["norm_reward"] is True


class BigRewardEnv(ConstantEnv):
    """Constant-v0 paying 2.5 a step, 3 steps an episode: a score that clipping would change."""

    def step(self, action):
        return np.zeros(1), 2.5, False, False, {}


gym.register("BigReward-v0", entry_point=BigRewardEnv, max_episode_steps=3)


def test_atari_rewards_are_clipped_for_learning_only(script):
    """With sign_reward, the rewards a rollout learns from are signs, and its episodes keep the game's score; build
    turns sign_reward on for ALE/ ids only."""
    normalizer = script.Normalizer(1, 2, 0.99, False, False, sign_reward=True)
    np.testing.assert_array_equal(normalizer.reward(np.array([4.0, -0.5]), np.array([False, False])), [1.0, -1.0])
    envs = script.make_env("BigReward-v0", 2)
    agent = script.Agent(1, envs.single_action_space)
    data = script.rollout(envs, agent, normalizer, normalizer.obs_tensor(envs.reset(seed=0)[0], "cpu"), 6)
    envs.close()
    assert torch.equal(data.rewards, torch.ones(6, 2)) and [r for r, _, _ in data.episodes] == [7.5] * 4
    for env_id, clipped in (("Pixel-v0", False), ("BigReward-v0", False)) + ((("ALE/Pong-v5", True),) if ALE else ()):
        envs = script.make_env(env_id, 1)
        _, built = script.build(script.Args(env_id=env_id), envs, torch.device("cpu"))
        envs.close()
        assert built.sign_reward is clipped, env_id


def test_an_atari_game_is_preprocessed_and_trains(in_tmp, monkeypatch):
    """ALE/Pong-v5 gives stacks of 4 grey 84 × 84 frames, in uint8, cut at 27,000 steps, and a short ppo_clip run
    trains on them. The env's rewards are the game's (the vector env is not wrapped to clip them): only the Normalizer
    clips them, for learning. No evaluation: two 1-episode evaluations of an untrained policy took 232 s here."""
    if not ALE:
        unavailable("Atari needs ale-py and OpenCV: pip install ale-py opencv-python-headless")
    env = ppo_clip.make_one("ALE/Pong-v5")
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert env.spec.max_episode_steps == 27_000
    env.close()
    batches = watch_rollouts(ppo_clip, monkeypatch)
    ppo_clip.main(tiny_args(ppo_clip, env_id="ALE/Pong-v5", total_timesteps=128))
    assert batches[0].obs.shape == (64, 2, 4, 84, 84) and batches[0].obs.dtype == torch.uint8
    assert next(Path("runs").iterdir()).name.startswith("ALE-Pong-v5__ppo_clip__1__")


@pytest.mark.parametrize("script", PLUMBING, indirect=True)
def test_an_atari_episode_logs_the_game_s_score(script):
    """ALE/Seaquest-v5 pays 20 points for a shark: an episode of random play (seed 1 scores 40, as in
    benchmarks/results/atari.random.csv) logs the sum of the game's own rewards, not of rewards clipped to ±1."""
    if not ALE:
        unavailable("Atari needs ale-py and OpenCV: pip install ale-py opencv-python-headless")
    envs, rewards, logged = script.make_env("ALE/Seaquest-v5", 1), [], None
    envs.reset(seed=1)
    envs.single_action_space.seed(1)
    while logged is None:
        _, reward, _, _, info = envs.step(np.array([envs.single_action_space.sample()]))
        rewards.append(float(reward[0]))
        logged = float(info["episode"]["r"][0]) if info.get("_episode", [False])[0] else None
    envs.close()
    assert max(rewards) == 20.0 and logged == sum(rewards) > 0
