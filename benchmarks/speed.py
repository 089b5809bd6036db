"""How fast the scripts train, in env steps per second (SPS), against two yardsticks: raw stepping of the same vector
env with random actions (so the ratio is the share of time left to the env), and Stable-Baselines3 PPO /
sb3-contrib TRPO at ppo_clip's / trpo's settings. Writes results/speed.csv and report/speed.md; report.py puts the
tables in the full report (report/report.md) and an Atari run's cost in README.

    pip install -r benchmarks/requirements.txt
    python benchmarks/speed.py                  # on an otherwise idle machine: a few minutes
    python benchmarks/speed.py --steps 5000     # a quick check that it works
    python benchmarks/speed.py --envs ALE/Breakout-v5 --merge   # remeasure one env's rows, keep the others

Every measured process runs on one thread (OMP_NUM_THREADS=1, torch on CPU), one at a time. A script's SPS is its own
last `charts/SPS` (env steps / seconds since its training loop started), with tensorboard logging as usual.
"""

import multiprocessing
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import tyro
from common import (
    PIXEL_SPEED_PAIRS,
    REPORT,
    RESULTS,
    SCRIPTS,
    SPEED_COLUMNS,
    SPEED_PAIRS,
    command_argv,
    cpu_name,
    launch,
    load_hyperparams,
    load_script,
    overrides_for,
    prepare,
    read_csv,
    read_scalars,
    speed_markdown,
    write_csv,
)


@dataclass
class Options:
    steps: int = 50_000
    """env steps of each measurement on a flat env: each script run, each raw stepping, each SB3 run"""
    pixel_steps: int = 10_000
    """env steps of each measurement on an Atari game, where a script makes 100 to 300 steps a second here"""
    envs: tuple[str, ...] = ("CartPole-v1", "Hopper-v5", "ALE/Breakout-v5")
    """the envs to measure the scripts on; the SB3 comparisons run on Hopper-v5 and an Atari game among them"""
    scripts: tuple[str, ...] = SCRIPTS
    """the scripts to measure"""
    compare: bool = True
    """whether to run SB3 PPO and sb3-contrib TRPO (--no-compare skips them)"""
    results_dir: Path = RESULTS
    """where speed.csv goes"""
    out_dir: Path = REPORT
    """where speed.md goes"""
    merge: bool = False
    """replace only the rows measured now in speed.csv, keeping the others (e.g. with --envs ALE/Breakout-v5); the
    default writes speed.csv afresh from this run alone"""


def raw_sps(env_id: str, num_envs: int, steps: int) -> float:
    """SPS of random actions in the vector env the scripts build: same-step autoreset, episode statistics."""
    make_one = load_script("ppo_clip").make_one  # an Atari game preprocessed as the scripts do; else gym.make
    envs = gym.vector.SyncVectorEnv(
        [partial(make_one, env_id)] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps // num_envs):
        envs.step(envs.action_space.sample())
    seconds = time.perf_counter() - start
    envs.close()
    return steps // num_envs * num_envs / seconds


def script_sps(algo: str, args) -> tuple[float, float]:
    """Runs the script with args as a child process; returns its last logged SPS and its peak memory in MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        prepare(folder, command_argv(algo, args))
        process, _ = launch(folder)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not the maximum over all children
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise SystemExit(f"{algo} failed:\n{(folder / 'output.txt').read_text()[-2000:]}")
        (run_dir,) = (folder / "runs").iterdir()
        sps = read_scalars(run_dir, "charts/SPS")["charts/SPS"][-1].value
    return sps, usage.ru_maxrss / 1024


def sb3_sps(ours: str, env_id: str, steps: int, args: dict) -> tuple[float, float]:
    """In a fresh process: trains SB3 PPO at ppo_clip's args (ours = "ppo_clip") or sb3-contrib TRPO at trpo's
    (ours = "trpo") for steps env steps, and returns its SPS and the process's peak memory in MiB. On an Atari game,
    SB3 PPO plays our env (peers.make_envs) with its CnnPolicy, whose NatureCNN π and V share, as ppo_clip's do."""
    import torch
    from peers import make_envs
    from sb3_contrib import TRPO
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    pixels = env_id.startswith("ALE/")
    envs = make_envs(env_id, args["num_envs"], seed=1, training=True)
    envs = envs if pixels else VecNormalize(envs, gamma=args["gamma"])
    mlp = dict(policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh))
    common = dict(
        n_steps=args["num_steps"],
        batch_size=args["num_envs"] * args["num_steps"] // args["num_minibatches"],
        gamma=args["gamma"],
        gae_lambda=args["gae_lambda"],
        **({} if pixels else mlp),
        device="cpu",
        seed=1,
    )
    with tempfile.TemporaryDirectory() as tensorboard_log:
        if ours == "ppo_clip":
            lr = args["learning_rate"]
            # SB3's value loss is (V − R̂)², ppo_clip's ½·(V − R̂)²: half the coefficient is the same weight.
            model = PPO(
                "CnnPolicy" if pixels else "MlpPolicy", envs, tensorboard_log=tensorboard_log, **common,
                learning_rate=(lambda remaining: remaining * lr) if args["anneal_lr"] else lr,
                n_epochs=args["update_epochs"], clip_range=args["clip_coef"], ent_coef=args["ent_coef"],
                vf_coef=args["vf_coef"] / 2, max_grad_norm=args["max_grad_norm"], target_kl=args["target_kl"],
            )  # fmt: skip
        else:
            # trpo's KL sums over a Box action's d dimensions, sb3-contrib's averages them: its δ and λ are ours / d.
            trpo, space = load_script("trpo"), envs.action_space
            d = space.shape[0] if isinstance(space, gym.spaces.Box) else 1
            model = TRPO(
                "MlpPolicy", envs, tensorboard_log=tensorboard_log, **common,
                learning_rate=args["vf_learning_rate"], n_critic_updates=args["vf_iters"],
                cg_max_steps=args["cg_iters"], cg_damping=(args["cg_damping"] or trpo.default_cg_damping(space)) / d,
                target_kl=(args["target_kl"] or trpo.default_target_kl(space)) / d,
                line_search_shrinking_factor=args["backtrack_coef"], line_search_max_iter=args["backtrack_iters"],
            )  # fmt: skip
        start = time.perf_counter()
        model.learn(total_timesteps=steps)
        seconds = time.perf_counter() - start
    return model.num_timesteps / seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed_row(name: str, env_id: str, steps: int, sps: float, peak: float, cpu: str, before="", after="") -> dict:
    """A row of speed.csv; before and after, the raw SPS, are empty for the other libraries."""
    return dict(name=name, env_id=env_id, steps=steps, sps=f"{sps:.0f}", raw_sps_before=before, raw_sps_after=after,
                peak_mib=f"{peak:.0f}", cpu=cpu)  # fmt: skip


def merged(old: list[dict], new: list[dict]) -> list[dict]:
    """old's rows in their order, each replaced by the new row of the same name and env, then the new rows old lacks."""
    fresh = {(row["name"], row["env_id"]): row for row in new}
    keys = {(row["name"], row["env_id"]) for row in old}
    return [fresh.get((row["name"], row["env_id"]), row) for row in old] + [
        row for row in new if (row["name"], row["env_id"]) not in keys
    ]


def main(options: Options) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every child, the SB3 ones included
    cpu, rows, measured, hyperparams = cpu_name(), [], {}, load_hyperparams()
    for env_id in options.envs:
        pixels = env_id.startswith("ALE/")
        steps = options.pixel_steps if pixels else options.steps
        for algo in options.scripts:
            flags = overrides_for(hyperparams, algo, env_id) if pixels else {}  # the Atari suite's settings
            args = load_script(algo).Args(**flags, env_id=env_id, total_timesteps=steps, seed=1, device="cpu")
            before = raw_sps(env_id, args.num_envs, steps)
            sps, peak = script_sps(algo, args)
            after = raw_sps(env_id, args.num_envs, steps)
            measured[algo, env_id] = args
            rows.append(speed_row(algo, env_id, steps, sps, peak, cpu, f"{before:.0f}", f"{after:.0f}"))
            print(f"{algo} {env_id}: {sps:,.0f} SPS; raw {before:,.0f} before, {after:,.0f} after; {peak:.0f} MiB")
    if options.compare:
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, so that its peak memory is its own
        for env_id in options.envs:
            pixels = env_id.startswith("ALE/")
            for ours, label in PIXEL_SPEED_PAIRS if pixels else SPEED_PAIRS if env_id == "Hopper-v5" else ():
                if (ours, env_id) not in measured:
                    continue
                steps = options.pixel_steps if pixels else options.steps
                with spawn.Pool(1) as pool:
                    sps, peak = pool.apply(sb3_sps, (ours, env_id, steps, vars(measured[ours, env_id])))
                rows.append(speed_row(label, env_id, steps, sps, peak, cpu))
                print(f"{label} {env_id}: {sps:,.0f} SPS; {peak:.0f} MiB")
    if options.merge:
        rows = merged(read_csv(options.results_dir / "speed.csv"), rows)
    write_csv(options.results_dir / "speed.csv", SPEED_COLUMNS, rows)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    (options.out_dir / "speed.md").write_text(speed_markdown(rows))
    print(speed_markdown(rows))


if __name__ == "__main__":
    main(tyro.cli(Options))
