"""A fingerprint of short fixed-seed CPU runs: the returns, the final weights and the normaliser statistics of each
script on CartPole-v1 and Pendulum-v1. A change that is not meant to change learning must leave it identical.

    OMP_NUM_THREADS=1 python benchmarks/fingerprint.py > before.json
    ... change ...
    OMP_NUM_THREADS=1 python benchmarks/fingerprint.py > after.json && diff before.json after.json

With --pixels, each script also plays ALE/Seaquest-v5 at the atari suite's settings (benchmarks/hyperparams.toml) for
6,144 steps, long enough for episodes to end inside a rollout, and evaluates one episode: the image path (the
NatureCNN, uint8 frames, sign rewards), which the flat envs never reach. About 3 minutes more here (18 s without);
needs ale-py.

benchmarks/fingerprint.json is its output with --pixels at the last change of learning or of rounding, made on this
project's machines (an AMD EPYC, one thread): the reference a later change is compared with, on a machine of that kind
(another CPU rounds differently).
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
from common import load_hyperparams, overrides_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRIPTS = ["pg", "npg", "trpo", "ppo_clip", "ppo_kl"]
PIXEL_ENV = "ALE/Seaquest-v5"


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


def fingerprint(name: str, env_id: str, total_timesteps: int, **overrides) -> dict:
    script = importlib.import_module(name)
    args = script.Args(env_id=env_id, total_timesteps=total_timesteps, seed=1, save_model=True, **overrides)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        with contextlib.redirect_stdout(io.StringIO()):
            returns = script.main(args)
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
    pixels = "--pixels" in sys.argv
    names = [arg for arg in sys.argv[1:] if arg != "--pixels"] or SCRIPTS
    result = {f"{n} {e}": fingerprint(n, e, 6144) for n in names for e in ("CartPole-v1", "Pendulum-v1")}
    if pixels:
        for n in names:
            overrides = overrides_for(load_hyperparams(), n, PIXEL_ENV)
            result[f"{n} {PIXEL_ENV}"] = fingerprint(n, PIXEL_ENV, 6144, eval_episodes=1, **overrides)
    print(json.dumps(result, indent=1))
