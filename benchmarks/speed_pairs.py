"""ppo_clip against SB3 PPO (or trpo against sb3-contrib TRPO) on one env, measured in turns: ours, theirs, ours, …
so that a drift in the machine's speed falls on both. Prints each pair's SPS and ratio, and the median ratio; writes
nothing. speed.py measures each once; on a machine whose speed varies from minute to minute, its one ratio can be off
by more than the scripts differ.

    python benchmarks/speed_pairs.py --env-id ALE/Breakout-v5 --pairs 3   # on an otherwise idle machine
    python benchmarks/speed_pairs.py --script trpo --env-id Hopper-v5 --steps 20480
"""

import multiprocessing
import os
import statistics
from dataclasses import dataclass
from typing import Literal

import tyro
from common import load_hyperparams, load_script, overrides_for
from speed import sb3_sps, script_sps

THEIRS = {"ppo_clip": "SB3 PPO", "trpo": "sb3-contrib TRPO"}


@dataclass
class Options:
    script: Literal["ppo_clip", "trpo"] = "ppo_clip"
    """ours: ppo_clip (against SB3 PPO) or trpo (against sb3-contrib TRPO)"""
    env_id: str = "ALE/Breakout-v5"
    """the env; an Atari game runs the atari suite's settings (benchmarks/hyperparams.toml), a flat env the defaults"""
    steps: int = 10_000
    """env steps of each measurement"""
    pairs: int = 3
    """how many times to measure the two in turn"""


def main(options: Options) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every child, the SB3 ones included
    pixels = options.env_id.startswith("ALE/")
    flags = overrides_for(load_hyperparams(), options.script, options.env_id) if pixels else {}
    args = load_script(options.script).Args(
        **flags, env_id=options.env_id, total_timesteps=options.steps, seed=1, device="cpu"
    )
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter for SB3, as in speed.py
    ratios = []
    for pair in range(options.pairs):
        ours, _ = script_sps(options.script, args)
        with spawn.Pool(1) as pool:
            theirs, _ = pool.apply(sb3_sps, (options.script, options.env_id, options.steps, vars(args)))
        ratios.append(ours / theirs)
        names = f"{options.script} {ours:,.0f} SPS, {THEIRS[options.script]} {theirs:,.0f} SPS"
        print(f"pair {pair + 1}: {names}, {ours / theirs:.2f}×", flush=True)
    print(f"median of {options.pairs}: {statistics.median(ratios):.2f}× on {options.env_id}")


if __name__ == "__main__":
    main(tyro.cli(Options))
