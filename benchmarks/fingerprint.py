"""A fingerprint of short fixed-seed CPU runs: the returns, the final weights and the normaliser statistics of each
script on CartPole-v1 and Pendulum-v1. A change that is not meant to change learning must leave it identical.

    OMP_NUM_THREADS=1 python benchmarks/fingerprint.py > before.json
    ... change ...
    OMP_NUM_THREADS=1 python benchmarks/fingerprint.py > after.json && diff before.json after.json
"""

import contextlib
import hashlib
import importlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRIPTS = ["pg", "npg", "trpo", "ppo_clip", "ppo_kl"]


def digest(values) -> str:
    return hashlib.sha256(b"".join(np.asarray(v, dtype=np.float64).tobytes() for v in values)).hexdigest()[:16]


def normaliser_stats(state: dict) -> list:
    """(mean, var, count) of the observations, then of the discounted returns, from either checkpoint layout: the
    hand-written merge's {"obs_stats": (mean, var, count), ...}, or RunningMeanStd's {"obs": {"mean": ...}, ...}."""
    if "obs_stats" in state:
        stats = [*state["obs_stats"], *state["return_stats"]]
    else:
        stats = [state[name][key] for name in ("obs", "return") for key in ("mean", "var", "count")]
    return [np.asarray(s.cpu() if isinstance(s, torch.Tensor) else s, dtype=np.float64) for s in stats]


def fingerprint(name: str, env_id: str, total_timesteps: int) -> dict:
    script = importlib.import_module(name)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        with contextlib.redirect_stdout(io.StringIO()):
            returns = script.main(script.Args(env_id=env_id, total_timesteps=total_timesteps, seed=1, save_model=True))
        (path,) = Path("runs").glob("*/*.model")
        try:
            checkpoint = torch.load(path, weights_only=True)
        except Exception:  # the scripts before issue 7 saved numpy arrays; this is a file this call just wrote
            checkpoint = torch.load(path, weights_only=False)
    weights = checkpoint["agent"]
    stats = normaliser_stats(checkpoint["normalizer"])
    return {
        "returns": digest(returns),
        "episodes": len(returns),
        "last_return": float(returns[-1]) if returns else None,
        "weights": digest(weights[k] for k in sorted(weights)),
        "normalizer": digest(stats),
        "obs_count": float(stats[2]),
    }


if __name__ == "__main__":
    assert os.environ.get("OMP_NUM_THREADS") == "1", "set OMP_NUM_THREADS=1: the thread count changes rounding"
    names = sys.argv[1:] or SCRIPTS
    result = {f"{n} {e}": fingerprint(n, e, 6144) for n in names for e in ("CartPole-v1", "Pendulum-v1")}
    print(json.dumps(result, indent=1))
