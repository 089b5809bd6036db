"""Runs scripts over seeds and appends one CSV row per run; rows already in the CSV are skipped, so it resumes.

    python benchmarks/run.py --scripts pg npg --env-id CartPole-v1 --seeds 1 2 3
    python benchmarks/run.py --scripts trpo --env-id Hopper-v5 --seeds 1 2 3 --total-timesteps 200000

Each run is `python <script>.py --env-id ... --seed ...` with OMP_NUM_THREADS=1, two at a time. A row gives the final
mean return over the last 20 episodes and, for a --solve-at threshold, the first step and wall-clock second at which
that mean reached it (empty if never).
"""

import argparse
import csv
import importlib
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIELDS = ["script", "env_id", "seed", "total_timesteps", "flags", "final_mean20", "solve_at", "solved_step",
          "solved_seconds", "episodes", "kl_mean", "kl_max", "wall_seconds", "command"]  # fmt: skip


def summarise(run_dir: Path, solve_at: float | None, start: float) -> dict:
    """Final mean of the last 20 episodic returns, when that running mean first reached solve_at, and the mean and
    largest logged KL(π_old ‖ π_new) of the updates."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    scalars = events.Scalars("charts/episodic_return")
    returns = np.array([s.value for s in scalars])
    means = np.array([returns[max(0, i - 19) : i + 1].mean() for i in range(len(returns))])
    kls = np.array([s.value for s in events.Scalars("losses/kl")])
    row = {"final_mean20": round(float(means[-1]), 1) if len(means) else "", "episodes": len(returns),
           "kl_mean": f"{kls.mean():.6g}", "kl_max": f"{kls.max():.6g}"}  # fmt: skip
    hits = np.flatnonzero(means >= solve_at) if solve_at is not None and len(means) >= 20 else []
    hits = [i for i in hits if i >= 19]
    row["solved_step"] = scalars[hits[0]].step if hits else ""
    row["solved_seconds"] = round(scalars[hits[0]].wall_time - start, 1) if hits else ""
    return row


def run_one(script: str, env_id: str, seed: int, total_timesteps: int, solve_at: float | None, extra: list) -> dict:
    flags = ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(total_timesteps), *extra]
    with tempfile.TemporaryDirectory() as folder:
        start = time.time()
        result = subprocess.run(
            [sys.executable, str(ROOT / f"{script}.py"), *flags],
            cwd=folder,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{script} seed {seed} failed:\n{result.stderr[-2000:]}")
        wall = time.time() - start
        (run_dir,) = (Path(folder) / "runs").iterdir()
        row = summarise(run_dir, solve_at, start)
    command = result.stdout.splitlines()[0]  # each script prints the full command that reproduces its run
    run = {
        "script": script,
        "env_id": env_id,
        "seed": seed,
        "total_timesteps": total_timesteps,
        "flags": " ".join(extra),
    }
    return {**run, "solve_at": solve_at or "", "wall_seconds": round(wall, 1), "command": command, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripts", nargs="+", required=True)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--total-timesteps", type=int, default=None, help="default: the script's own default")
    parser.add_argument("--solve-at", type=float, default=None, help="default: 475 on CartPole-v1, else none")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results.csv")
    parser.add_argument("extra", nargs="*", help="further flags for the scripts, after --")
    args = parser.parse_args()
    solve_at = args.solve_at if args.solve_at is not None else (475.0 if args.env_id == "CartPole-v1" else None)

    def key(row) -> tuple:
        return tuple(str(row[k]) for k in ("script", "env_id", "seed", "total_timesteps", "flags"))

    done = set()
    if args.csv.exists():
        with open(args.csv) as f:
            done = {key(row) for row in csv.DictReader(f)}
    todo = []
    for script in args.scripts:
        total = args.total_timesteps or importlib.import_module(script).Args().total_timesteps
        for seed in args.seeds:
            run = {"script": script, "env_id": args.env_id, "seed": seed, "total_timesteps": total}
            if key({**run, "flags": " ".join(args.extra)}) not in done:
                todo.append(run)
    print(f"{len(todo)} runs to do")
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, **run, solve_at=solve_at, extra=args.extra) for run in todo]
        for future in futures:
            row = future.result()
            new = not args.csv.exists()
            with open(args.csv, "a", newline="") as f:
                writer = csv.DictWriter(f, FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print({k: row[k] for k in FIELDS if k != "command"}, flush=True)


if __name__ == "__main__":
    main()
