"""The peers: Stable-Baselines3 A2C and PPO and sb3-contrib TRPO, each at rl-zoo's tuned settings for the env and,
where those differ from the library's defaults, at the defaults too. run.py runs them beside our scripts (`--peers`, or
a peer's name in `--scripts`) through the same runner, folders and CSVs, and report.py sets each script against its
peer. Every setting of every peer is in PEERS below, with the file it comes from.

    OMP_NUM_THREADS=1 python benchmarks/peers.py --peer sb3-ppo --env-id Hopper-v5 --seed 1 --total-timesteps 1000000

To the harness a peer looks like one of our scripts: it runs in the current folder, logs each finished episode to
tensorboard in runs/<one folder>/ as `charts/episodic_return` and `charts/episodic_length` at the env step (the raw
return from SB3's Monitor, before VecNormalize), saves the model, and ends by evaluating the deterministic policy for
--eval-episodes on a fresh env seeded with --seed, normalisation statistics frozen, printing the lines our scripts'
`evaluate` prints. The budget is the suite's, not rl-zoo's n_timesteps; SB3 stops after the first whole rollout that
reaches it. The harness writes the settings into the command (--settings, JSON), so a pasted command repeats the run
even after PEERS changes, and a change to PEERS shows as runs made with other flags.

The rows are named after the variant: `sb3-ppo` and `sb3-trpo` are rl-zoo's settings, `sb3-ppo-defaults` and
`sb3-trpo-defaults` the library's defaults, with VecNormalize (rl-zoo's `normalize: true`: observations and rewards,
the algorithm's γ) on the Box-action envs, and one env, make_vec_env's default. `sb3-a2c` is both on MuJoCo, where
rl-zoo sets nothing but `normalize: true`. In a setting, "lin_x" is rl-zoo's linear schedule from x at the start to 0
at the end, and activation_fn names a class of torch.nn.
"""

import importlib
import inspect
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro

ZOO = "github.com/DLR-RM/rl-baselines3-zoo"
ZOO_MUJOCO_POLICY = dict(log_std_init=-2, ortho_init=False, activation_fn="ReLU",
                         net_arch=dict(pi=[256, 256], vf=[256, 256]))  # fmt: skip
# The library's defaults; VecNormalize because MuJoCo's actions are Box. The nine standard MuJoCo tasks: the mujoco
# suite runs two of them, the gym-mujoco suite all nine.
MUJOCO = ("Ant-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Swimmer-v5", "Humanoid-v5", "Reacher-v5",
          "InvertedPendulum-v5", "InvertedDoublePendulum-v5")  # fmt: skip
DEFAULTS = {env_id: dict(normalize=True) for env_id in MUJOCO}
# rl-zoo's TRPO entry for the MuJoCo envs (v3 at the commit below, v4 later with the same values), which inherits its
# "pybullet-defaults" anchor.
ZOO_TRPO_MUJOCO = dict(normalize=True, n_envs=2, batch_size=128, n_steps=1024, gamma=0.99, gae_lambda=0.95,
                       sub_sampling_factor=1, cg_max_steps=25, cg_damping=0.1, n_critic_updates=20,
                       learning_rate=1e-3)  # fmt: skip

# rl-zoo's PPO entry for every Atari game: the PPO paper's settings (4 epochs instead of 3), a CNN whose encoder π and V
# share (SB3's NatureCNN), 8 envs, frames stacked by 4.
ZOO_PPO_ATARI = dict(policy="CnnPolicy", n_envs=8, n_steps=128, n_epochs=4, batch_size=256,
                     learning_rate="lin_2.5e-4", clip_range="lin_0.1", vf_coef=0.5, ent_coef=0.01)  # fmt: skip


@dataclass(frozen=True)
class Peer:
    algorithm: str
    """the library's class, as module.Class"""
    ours: tuple[str, ...]
    """the scripts of ours it is the peer of"""
    source: str
    """where the settings come from"""
    settings: dict[str, dict]
    """env id → n_envs and normalize (VecNormalize) if set, and keyword arguments of the algorithm"""


PEERS = {
    "sb3-a2c": Peer(
        "stable_baselines3.A2C",
        ("pg",),
        f"{ZOO}, hyperparams/a2c.yml at c6c209e7d487635f0b835fb916ec4468142b28ff",
        {
            "CartPole-v1": dict(n_envs=8, ent_coef=0.0),
            "Acrobot-v1": dict(normalize=True, n_envs=16, ent_coef=0.0),
            # "Tuned", and named Pendulum-v1, at this commit
            "Pendulum-v1": dict(
                normalize=True,
                n_envs=8,
                ent_coef=0.0,
                max_grad_norm=0.5,
                n_steps=8,
                gae_lambda=0.9,
                vf_coef=0.4,
                gamma=0.9,
                use_rms_prop=True,
                normalize_advantage=False,
                learning_rate="lin_7e-4",
                use_sde=True,
                policy_kwargs=dict(log_std_init=-2, ortho_init=False),
            ),
            # HalfCheetah-v4 and Hopper-v4 are "mujoco-defaults", which sets only normalize: the library's defaults,
            # which it runs on every MuJoCo task.
            **DEFAULTS,
        },
    ),
    "sb3-trpo": Peer(
        "sb3_contrib.TRPO",
        ("npg", "trpo"),
        f"{ZOO}, hyperparams/trpo.yml at eb5d9c7770abe9a60f5511193ebcb260dfdc2706",
        {
            "CartPole-v1": dict(
                n_envs=2,
                n_steps=512,
                batch_size=512,
                cg_damping=1e-3,
                gae_lambda=0.98,
                gamma=0.99,
                learning_rate=1e-3,
                n_critic_updates=20,
            ),
            "Acrobot-v1": dict(normalize=True, n_envs=2, n_steps=1024),
            "Pendulum-v1": dict(
                n_envs=2, n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4
            ),
            "Hopper-v5": ZOO_TRPO_MUJOCO,
            "HalfCheetah-v5": dict(ZOO_TRPO_MUJOCO, target_kl=0.04),
        },
    ),
    "sb3-trpo-defaults": Peer("sb3_contrib.TRPO", ("npg", "trpo"), "sb3-contrib's defaults", DEFAULTS),
    "sb3-ppo": Peer(
        "stable_baselines3.PPO",
        ("ppo_clip", "ppo_kl"),
        f"{ZOO}, hyperparams/ppo.yml at 208b6fdf3a9aa24de44b2e068c6e5f6a07d97fcc",
        {
            "CartPole-v1": dict(
                n_envs=8,
                n_steps=32,
                batch_size=256,
                gae_lambda=0.8,
                gamma=0.98,
                n_epochs=20,
                ent_coef=0.0,
                learning_rate="lin_0.001",
                clip_range="lin_0.2",
            ),
            "Acrobot-v1": dict(
                normalize=True, n_envs=16, n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0
            ),
            "Pendulum-v1": dict(
                n_envs=4,
                n_steps=1024,
                gae_lambda=0.95,
                gamma=0.9,
                n_epochs=10,
                ent_coef=0.0,
                learning_rate=1e-3,
                clip_range=0.2,
                use_sde=True,
                sde_sample_freq=4,
            ),
            # rl-zoo's Hopper-v4 and HalfCheetah-v4, applied to v5
            "Hopper-v5": dict(
                normalize=True,
                n_envs=1,
                batch_size=32,
                n_steps=512,
                gamma=0.999,
                learning_rate=9.80828e-05,
                ent_coef=0.00229519,
                clip_range=0.2,
                n_epochs=5,
                gae_lambda=0.99,
                max_grad_norm=0.7,
                vf_coef=0.835671,
                policy_kwargs=ZOO_MUJOCO_POLICY,
            ),
            "HalfCheetah-v5": dict(
                normalize=True,
                n_envs=1,
                batch_size=64,
                n_steps=512,
                gamma=0.98,
                learning_rate=2.0633e-05,
                ent_coef=0.000401762,
                clip_range=0.1,
                n_epochs=20,
                gae_lambda=0.92,
                max_grad_norm=0.8,
                vf_coef=0.58096,
                policy_kwargs=ZOO_MUJOCO_POLICY,
            ),
            # rl-zoo's "atari" entry, on our scripts' Atari env (see make_envs) instead of its AtariWrapper
            **{env_id: ZOO_PPO_ATARI for env_id in ("ALE/Seaquest-v5", "ALE/Breakout-v5")},
        },
    ),
    "sb3-ppo-defaults": Peer("stable_baselines3.PPO", ("ppo_clip", "ppo_kl"), "Stable-Baselines3's defaults", DEFAULTS),
}


@dataclass
class Options:
    peer: str = "sb3-ppo"
    """the row to run: sb3-a2c, sb3-trpo, sb3-trpo-defaults, sb3-ppo or sb3-ppo-defaults (PEERS)"""
    env_id: str = "CartPole-v1"
    """the id of the gymnasium environment"""
    seed: int = 1
    """seeds the training envs, SB3 (torch, numpy, the action space) and the evaluation env"""
    total_timesteps: int = 100_000
    """total environment steps, summed over the envs"""
    eval_episodes: int = 10
    """episodes of the deterministic policy at the end"""
    settings: str | None = None
    """the settings as JSON; None means PEERS[peer].settings[env_id]"""


def settings_json(peer: str, env_id: str) -> str:
    """The peer's settings for env_id as the JSON that --settings takes."""
    return json.dumps(PEERS[peer].settings[env_id], separators=(",", ":"))


def algorithm_kwargs(settings: dict) -> dict:
    """The algorithm's keyword arguments: the settings without n_envs, normalize and policy, with "lin_x" read as a
    linear schedule and activation_fn as the torch.nn class it names."""
    import torch
    from stable_baselines3.common.utils import LinearSchedule

    kwargs = {key: value for key, value in settings.items() if key not in ("n_envs", "normalize", "policy")}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("lin_"):
            kwargs[key] = LinearSchedule(float(value.removeprefix("lin_")), 0.0, 1.0)  # x · progress_remaining
    if "activation_fn" in kwargs.get("policy_kwargs", {}):
        policy = kwargs["policy_kwargs"]
        kwargs["policy_kwargs"] = {**policy, "activation_fn": getattr(torch.nn, policy["activation_fn"])}
    return kwargs


def make_envs(env_id: str, n_envs: int, seed: int, training: bool):
    """SB3's vector env of env_id, each env in a Monitor, which records the raw return. An Atari game (an ALE/ id) is
    the env our scripts make (ppo_clip.make_one: v5's sticky actions, whole games, Mnih et al.'s preprocessing with 4
    frames stacked), so that both play the same game; for training, its rewards are clipped to their sign after the
    Monitor, as our scripts learn from them while they log the game's score."""
    from stable_baselines3.common.env_util import make_vec_env

    if not env_id.startswith("ALE/"):
        return make_vec_env(env_id, n_envs=n_envs, seed=seed)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ppo_clip import make_one

    sign = dict(wrapper_class=gym.wrappers.TransformReward, wrapper_kwargs=dict(func=np.sign)) if training else {}
    return make_vec_env(partial(make_one, env_id), n_envs=n_envs, seed=seed, **sign)


def main(options: Options) -> list[float]:
    """Trains the peer, saves it, and returns the returns of its deterministic evaluation."""
    import sb3_contrib
    import stable_baselines3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize
    from torch.utils.tensorboard import SummaryWriter

    if options.peer not in PEERS:
        raise SystemExit(f"peers.py: error: unknown peer {options.peer!r}; the peers are {', '.join(PEERS)}")
    if options.settings is None and options.env_id not in PEERS[options.peer].settings:
        known = ", ".join(PEERS[options.peer].settings)
        raise SystemExit(f"peers.py: error: {options.peer} has no settings for {options.env_id}; it has {known}")
    settings, peer = json.loads(options.settings or settings_json(options.peer, options.env_id)), PEERS[options.peer]
    module, name = peer.algorithm.rsplit(".", 1)
    algorithm = getattr(importlib.import_module(module), name)
    source = peer.source if settings == peer.settings.get(options.env_id) else "--settings"
    versions = f"stable-baselines3 {stable_baselines3.__version__}, sb3-contrib {sb3_contrib.__version__}"
    print(f"{options.peer}: {name} on {options.env_id} with {json.dumps(settings)}, from {source} ({versions})")

    torch.set_num_threads(1)
    os.makedirs("runs", exist_ok=True)
    env_name = options.env_id.replace("/", "-")  # as our scripts name their run folders
    run_dir = tempfile.mkdtemp(prefix=f"{env_name}__{options.peer}__{options.seed}__{int(time.time())}_",
                               dir="runs")  # fmt: skip
    envs = make_envs(options.env_id, settings.get("n_envs", 1), options.seed, training=True)
    if settings.get("normalize"):
        gamma = settings.get("gamma", inspect.signature(algorithm).parameters["gamma"].default)
        envs = VecNormalize(envs, gamma=gamma)
    policy = settings.get("policy", "MlpPolicy")
    model = algorithm(policy, envs, seed=options.seed, device="cpu", **algorithm_kwargs(settings))
    writer = SummaryWriter(run_dir)

    class LogEpisodes(BaseCallback):
        """Our scripts' tensorboard keys, one event per finished episode, from Monitor's raw return."""

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"], self.num_timesteps)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"], self.num_timesteps)
            return True

    try:
        model.learn(options.total_timesteps, callback=LogEpisodes())
        model.save(f"{run_dir}/{options.peer}.zip")
        if settings.get("normalize"):
            envs.save(f"{run_dir}/vecnormalize.pkl")
    finally:
        writer.close()
        envs.close()
    print(f"model saved to {run_dir}/{options.peer}.zip")

    eval_envs = make_envs(options.env_id, 1, options.seed, training=False)
    if settings.get("normalize"):  # the training statistics, frozen, and the raw reward
        eval_envs = VecNormalize.load(f"{run_dir}/vecnormalize.pkl", eval_envs)
        eval_envs.training, eval_envs.norm_reward = False, False
    truncated = []

    def note_truncation(local_vars: dict, _) -> None:
        if local_vars["done"] and "episode" in local_vars["info"]:
            truncated.append(local_vars["info"].get("TimeLimit.truncated", False))

    returns, lengths = evaluate_policy(model, eval_envs, options.eval_episodes, deterministic=True,
                                       return_episode_rewards=True, callback=note_truncation)  # fmt: skip
    eval_envs.close()
    for i, (episodic_return, length, cut) in enumerate(zip(returns, lengths, truncated, strict=True), 1):
        print(f"eval episode {i}: return {episodic_return:.2f} in {length} steps" + " (truncated)" * cut)
    mean = f"{np.mean(returns):.2f} ± {np.std(returns):.2f}"
    print(f"eval: {mean} over {options.eval_episodes} episodes of {options.env_id}")
    return returns


if __name__ == "__main__":
    main(tyro.cli(Options))
