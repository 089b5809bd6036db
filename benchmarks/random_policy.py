"""The floor of a suite's tables: a uniformly random policy's score on each of its envs, played on the env the scripts
make (ppo_clip's make_one: on an ALE/ id the Atari preprocessing, v5's sticky actions, whole games and the 27,000-step
cap), its episodes' returns as the game counts them. Writes results/<suite>.random.csv; report.py gives each env's
mean under its table.

    python benchmarks/random_policy.py --suite atari    # 30 episodes per env: about a minute here
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path

import tyro
from common import RANDOM_COLUMNS, RESULTS, SUITES, load_script, write_csv


@dataclass
class Options:
    suite: str = "atari"
    """the suite whose envs to play (SUITES in benchmarks/common.py)"""
    episodes: int = 30
    """episodes per env; episode i is seeded with i, the env and the action sampler alike"""
    results_dir: Path = RESULTS
    """where <suite>.random.csv goes"""


def play(env_id: str, episodes: int) -> list[dict]:
    """The return and length of each of episodes episodes of uniformly random actions on env_id."""
    rows = []
    with contextlib.closing(load_script("ppo_clip").make_one(env_id)) as env:
        for episode in range(1, episodes + 1):
            env.reset(seed=episode)
            env.action_space.seed(episode)
            total, length, done = 0.0, 0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total, length, done = total + float(reward), length + 1, terminated or truncated
            rows.append(dict(env_id=env_id, episode=episode, episodic_return=total, episodic_length=length))
    return rows


def main(options: Options) -> None:
    rows = [row for env_id in SUITES[options.suite].envs for row in play(env_id, options.episodes)]
    path = options.results_dir / f"{options.suite}.random.csv"
    write_csv(path, RANDOM_COLUMNS, rows)
    for env_id in SUITES[options.suite].envs:
        scores = [row["episodic_return"] for row in rows if row["env_id"] == env_id]
        print(f"{env_id}: {sum(scores) / len(scores):.1f} over {len(scores)} episodes of a random policy")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(tyro.cli(Options))
