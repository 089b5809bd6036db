"""Image observations: the NatureCNN, uint8 storage, learning from one pixel, checkpoints, video, bad images, Atari."""

import dataclasses
import importlib
import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ConstantEnv, tiny_args, unavailable

import ppo_clip

ALE = importlib.util.find_spec("ale_py") and importlib.util.find_spec("cv2")


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


def watch_rollouts(script, monkeypatch):
    batches, rollout = [], script.rollout
    monkeypatch.setattr(script, "rollout", lambda *a, **k: batches.append(rollout(*a, **k)) or batches[-1])
    return batches


# The plumbing that stores, saves and reloads images is the same text in all five (tests/test_shape.py): two suffice.
PLUMBING = ["pg", "trpo"]


@pytest.mark.parametrize("name", PLUMBING)
def test_images_are_stored_as_uint8_and_not_normalised(name, in_tmp, monkeypatch):
    script = importlib.import_module(name)
    batches = watch_rollouts(script, monkeypatch)
    script.main(tiny_args(script, env_id="Pixel-v0", total_timesteps=128, save_model=True))  # one update
    data = batches[0]
    assert data.obs.dtype == data.next_obs.dtype == torch.uint8 and data.obs.shape == (64, 2, 36, 36, 3)
    assert set(data.obs.unique().tolist()) == {0, 255}, "raw pixels, neither scaled nor normalised"
    (path,) = Path("runs").glob("*/*.model")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["args"]["norm_obs"] is False


# Per script, the budget and overrides that learn Pixel-v0 here, with few critic steps: the pixel tests' time goes here.
# The PPO scripts' π and V share one encoder, whose Adam steps the value loss's gradient dominates at first: at 3e-4
# they learn it in 2,048 steps, at 1e-3 in 1,024.
PIXEL_RUNS = {
    "pg": dict(total_timesteps=4096, num_steps=64, vf_iters=1, num_minibatches=4),
    "npg": dict(total_timesteps=3072, num_steps=64, target_kl=0.05, vf_iters=1, num_minibatches=4),
    "trpo": dict(total_timesteps=3072, num_steps=64, target_kl=0.05, vf_iters=1, num_minibatches=4),
    "ppo_clip": dict(total_timesteps=1024, num_steps=64, update_epochs=4, num_minibatches=4, learning_rate=1e-3),
    "ppo_kl": dict(total_timesteps=1024, num_steps=64, update_epochs=4, num_minibatches=4, learning_rate=1e-3),
}


@pytest.mark.slow  # a learning run: 1,024 to 4,096 steps through the NatureCNN
def test_every_script_learns_to_read_one_pixel(script, in_tmp, monkeypatch):
    """Pixel-v0 pays 1 for reading one pixel of a 36 × 36 image, 0.5 on average for not reading it. The training
    episodes start near 0.5, and the deterministic policy ends right on 95 of 100 or more (a constant action: 50)."""
    evaluations, evaluate = [], script.evaluate
    monkeypatch.setattr(script, "evaluate", lambda *a: evaluations.append(evaluate(*a)) or evaluations[-1])
    args = script.Args(env_id="Pixel-v0", seed=1, num_envs=4, save_model=True, eval_episodes=100)
    returns = script.main(dataclasses.replace(args, **PIXEL_RUNS[script.__name__]))
    assert np.mean(returns[:100]) < 0.6 and np.mean(evaluations[0]) >= 0.95, (returns[:100], evaluations)


@pytest.mark.parametrize("name", PLUMBING)
def test_image_checkpoint_evaluates_as_in_memory(name, in_tmp, monkeypatch):
    script = importlib.import_module(name)
    evaluations, evaluate = [], script.evaluate
    monkeypatch.setattr(script, "evaluate", lambda *a: evaluations.append(evaluate(*a)) or evaluations[-1])
    script.main(tiny_args(script, env_id="Pixel-v0", total_timesteps=128, save_model=True, eval_episodes=3))
    (path,) = Path("runs").glob("*/*.model")
    assert script.main(script.Args(eval_checkpoint=str(path), eval_episodes=3)) == evaluations[0]


def test_capture_video_films_the_image_env(in_tmp, monkeypatch):
    """The filmed env renders its frames through make_one; RecordVideo (which needs moviepy) is replaced by a
    recorder of what it would have encoded."""
    frames = []

    class Recorder(gym.Wrapper):
        def __init__(self, env, folder):
            super().__init__(env)

        def step(self, action):
            out = self.env.step(action)
            frames.append(self.env.render())
            return out

    monkeypatch.setattr(gym.wrappers, "RecordVideo", Recorder)
    ppo_clip.main(tiny_args(ppo_clip, env_id="Pixel-v0", capture_video=True))
    assert len(frames) >= 128 and all(f.shape == (36, 36, 3) and f.dtype == np.uint8 for f in frames)


def test_norm_obs_on_images_is_refused(script):
    assert "--norm-obs is for flat observations" in script.check_args(script.Args(env_id="Pixel-v0", norm_obs=True))


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
