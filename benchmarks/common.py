"""What run.py, task.py, report.py and speed.py share: the suites, the command that reproduces a run, the run folder
and its markers, and the CSV files. Those tools are run as scripts, so `benchmarks/` is on sys.path and they import
this module as `common` (and peers.py as `peers`).

A run is one row (one of our scripts, or a peer of peers.py) on one env with one seed. A run folder holds command.json
(written before the run starts), the row's runs/ and output.txt, and finished.json, written only once the row's
process has exited. A folder without finished.json is a run that was killed (or is still going), so it is redone from
scratch.
"""

import csv
import dataclasses
import fnmatch
import importlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import tomllib
import tyro
from peers import MUJOCO, PEERS, settings_json
from peers import Options as PeerOptions
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
WORK = BENCHMARKS / "work"
REPORT = BENCHMARKS / "report"
HYPERPARAMS = BENCHMARKS / "hyperparams.toml"
SCRIPTS = ("pg", "npg", "trpo", "ppo_clip", "ppo_kl")
EVAL_EPISODES = 10  # the deterministic evaluation that ends every run, ours and the peers'
# The flags the harness sets in every run of our scripts, besides the suite's env, seed and budget.
HARNESS_FLAGS = dict(save_model=True, eval_episodes=EVAL_EPISODES)

# The per-episode CSV, results/<suite>.csv; its sidecar results/<suite>.commands.csv, one row per finished run; and
# results/<suite>.eval.csv, one row per episode of the deterministic evaluation that ends each run. wall_seconds counts
# from the start of the run's process, so it includes start-up (a resumed run's, from its first start). resumed_at:
# the global steps at which a run resumed from its checkpoint after it was killed, ";"-separated; empty if it never did.
EPISODE_COLUMNS = ("algo", "env_id", "seed", "global_step", "episodic_return", "episodic_length", "wall_seconds")
COMMAND_COLUMNS = ("algo", "env_id", "seed", "episodes", "wall_seconds", "command", "resumed_at")
EVAL_COLUMNS = ("algo", "env_id", "seed", "episode", "episodic_return", "episodic_length")
RANDOM_COLUMNS = ("env_id", "episode", "episodic_return", "episodic_length")  # results/<suite>.random.csv
# What our scripts' `evaluate` and peers.py print for each episode of the evaluation.
EVAL_LINE = re.compile(r"^eval episode (\d+): return (\S+) in (\d+) steps(?: \(truncated\))?$", re.MULTILINE)
SPEED_COLUMNS = ("name", "env_id", "steps", "sps", "raw_sps_before", "raw_sps_after", "peak_mib", "cpu")
# The speed table's comparisons with other libraries: (our script, their row's name). On an Atari game, SB3 PPO only.
SPEED_PAIRS = (("ppo_clip", "SB3 PPO"), ("trpo", "sb3-contrib TRPO"))
PIXEL_SPEED_PAIRS = (("ppo_clip", "SB3 PPO"),)


@dataclass(frozen=True)
class Suite:
    envs: dict[str, int]
    """env id → total_timesteps of each run"""
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    scripts: tuple[str, ...] = SCRIPTS
    """our scripts; their peers (peers.py) run on the envs they have settings for, when asked"""
    in_report: bool = True
    """whether report.py (report.md, README) shows the suite; the smoke suite checks the harness, it measures nothing"""
    seeds_of: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    """rows (scripts or peers) that run only some of the seeds, by name"""
    seeds_at: dict[tuple[str, str], tuple[int, ...]] = dataclasses.field(default_factory=dict)
    """rows that run other seeds on one env, by (name, env id); this wins over seeds_of there"""
    save_every: int | None = None
    """our scripts' --save-every in the suite's runs: a run killed half-way resumes from its last checkpoint (the peers
    start again)"""
    peers: tuple[str, ...] | None = None
    """the peers the suite runs, where they have settings for its envs; None: every peer of its scripts that has"""
    tables: bool = True
    """whether hyperparams.toml's per-env tables apply; without them each script runs at its defaults"""


SUITES = {
    "classic": Suite({"CartPole-v1": 100_000, "Acrobot-v1": 200_000, "Pendulum-v1": 200_000}),
    "mujoco": Suite({"Hopper-v5": 1_000_000, "HalfCheetah-v5": 1_000_000}),
    "smoke": Suite({"CartPole-v1": 2048}, seeds=(1, 2), scripts=("pg", "ppo_clip"), in_report=False, save_every=2),
    # 250,000 agent steps are 1M frames (frame skip 4); ppo_clip and SB3 PPO at 5 seeds, trpo at 3, the others at one.
    # ppo_clip and SB3 PPO went from 3 seeds to 5 on both games (declared before seeds 4 and 5 ran), because at 3 their
    # Seaquest comparison was a tie: 0.95x [0.91, 1.00].
    "atari": Suite(
        {"ALE/Seaquest-v5": 250_000, "ALE/Breakout-v5": 250_000},
        seeds=(1, 2, 3, 4, 5),
        seeds_of={"pg": (1,), "npg": (1,), "ppo_kl": (1,), "trpo": (1, 2, 3)},
        save_every=20,  # 20 updates: 20,480 steps of ppo_clip, 10,240 of trpo, a few minutes here
    ),
    # The nine standard MuJoCo tasks, each script at its defaults (no hyperparams.toml) and each peer at its library's
    # defaults: what a user who runs a script on a task nobody tuned it for gets. trpo and ppo_clip at 5 seeds.
    # ppo_clip and SB3 PPO went from 3 seeds to 8 on Swimmer-v5 (declared before seeds 4-8 ran), because at 3 ppo_clip
    # was behind, 0.54x [0.32, 0.84], with 1 run of 3 swimming against 3 of 3, while its update equals PPO.train()'s to
    # rounding (tests/test_sb3_ground_truth.py): a bimodal task, where 3 seeds a side measure the draw.
    # npg went from 1 seed to 3 on InvertedPendulum-v5 (declared before seeds 2 and 3 ran), because its seed 1 held
    # 1000 from 50k steps to 800k and then fell to 315.7, under half of sb3-contrib's TRPO: is that fall the rule?
    # trpo, ppo_clip and their peers went from 3 seeds to 5 on every task (declared before seeds 4 and 5 ran): at 3,
    # 14 of their 18 training comparisons were ties, with intervals as wide as 0.47x to 1.76x, in both directions.
    "gym-mujoco": Suite(
        {env_id: 1_000_000 for env_id in MUJOCO},
        seeds=(1, 2, 3, 4, 5),
        seeds_of={"pg": (1,), "npg": (1,), "ppo_kl": (1,), "sb3-a2c": (1, 2, 3)},
        seeds_at={
            **{(row, "Swimmer-v5"): (1, 2, 3, 4, 5, 6, 7, 8) for row in ("ppo_clip", "sb3-ppo-defaults")},
            ("npg", "InvertedPendulum-v5"): (1, 2, 3),
        },
        peers=("sb3-a2c", "sb3-trpo-defaults", "sb3-ppo-defaults"),
        tables=False,
    ),
}


@dataclass(frozen=True)
class Run:
    suite: str
    algo: str
    env_id: str
    seed: int
    total_timesteps: int

    @property
    def key(self) -> tuple[str, str, str]:
        """How the CSVs name this run: (algo, env_id, seed), all as strings, as csv reads them back."""
        return self.algo, self.env_id, str(self.seed)

    def folder(self, work_dir: Path) -> Path:
        return (
            work_dir / self.suite / f"{self.env_id.replace('/', '-')}__{self.algo}__{self.seed}"
        )  # ALE/ ids: one folder

    def __str__(self) -> str:
        return f"{self.algo} {self.env_id} seed {self.seed}"


def suite_peers(suite: Suite) -> list[str]:
    """The peers of the suite's scripts that have settings for at least one of its envs (of those the suite names, if
    it names them), in PEERS order."""
    return [
        name
        for name, peer in PEERS.items()
        if set(peer.ours) & set(suite.scripts)
        and peer.settings.keys() & suite.envs
        and (suite.peers is None or name in suite.peers)
    ]


def suite_runs(name: str, scripts=(), envs=(), seeds=(), peers: bool = False) -> list[Run]:
    """The suite's runs in row, env, seed order: our scripts, then with peers=True their peers, each peer on the envs
    it has settings for. Non-empty scripts keeps only those rows (a peer's name selects that peer; with peers=True,
    the peers of the scripts named come too); non-empty envs or seeds keep only those of the suite."""
    if name not in SUITES:
        raise SystemExit(f"unknown suite {name!r}; the suites are {', '.join(SUITES)}")
    suite = SUITES[name]
    rows = [*suite.scripts, *suite_peers(suite)]
    for asked, known, what in (
        (scripts, rows, "script or peer"),
        (envs, suite.envs, "env"),
        (seeds, sorted({*suite.seeds, *(s for extra in suite.seeds_at.values() for s in extra)}), "seed"),
    ):
        if unknown := [x for x in asked if x not in known]:
            raise SystemExit(f"suite {name} has no {what} {unknown}; it has {list(known)}")
    chosen = set(scripts or suite.scripts)
    if peers:
        chosen |= {name for name in suite_peers(suite) if set(PEERS[name].ours) & chosen}
    return [
        Run(name, algo, env_id, seed, total)
        for algo in rows
        if algo in chosen
        for env_id, total in suite.envs.items()
        if (not envs or env_id in envs) and (algo in SCRIPTS or env_id in PEERS[algo].settings)
        for seed in suite.seeds_at.get((algo, env_id), suite.seeds_of.get(algo, suite.seeds))
        if not seeds or seed in seeds
    ]


def load_script(name: str):
    """One of the five scripts, imported as a module (they live in the repository root)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


def load_hyperparams(path: Path = HYPERPARAMS) -> dict[str, dict[str, dict]]:
    """hyperparams.toml as {script: {env_id: {Args field: value}}}, with keys written with - or _ read as fields. An
    env_id may be a pattern of fnmatch's ("ALE/*"), whose flags apply to every env it matches, under the env's own.

    The harness owns env_id, seed and total_timesteps, save_model and eval_episodes (every run ends with the same
    evaluation), and save_every and resume (a suite's), so the file may not set them."""
    tables = tomllib.loads(path.read_text()) if path.exists() else {}
    result = {}
    for algo, envs in tables.items():
        if algo not in SCRIPTS:
            raise SystemExit(f"{path}: unknown script [{algo}]; the scripts are {', '.join(SCRIPTS)}")
        names = {field.name for field in dataclasses.fields(load_script(algo).Args)}
        result[algo] = {}
        for env_id, flags in envs.items():
            flags = {key.replace("-", "_"): value for key, value in flags.items()}
            if unknown := sorted(set(flags) - names):
                raise SystemExit(f'{path}: [{algo}."{env_id}"] sets {unknown}, which are not fields of {algo}.Args')
            if owned := sorted(
                set(flags) & {"env_id", "seed", "total_timesteps", "save_every", "resume", *HARNESS_FLAGS}
            ):
                raise SystemExit(f'{path}: [{algo}."{env_id}"] sets {owned}, which the harness sets')
            result[algo][env_id] = flags
    return result


def run_args(run: Run, hyperparams: dict):
    """A script's Args for this run: its defaults, then hyperparams.toml's flags for (script, env), then the run's
    env, seed and budget, and the evaluation at the end. A peer's Options: the run's, with its settings for the env."""
    fields = dict(env_id=run.env_id, seed=run.seed, total_timesteps=run.total_timesteps)
    if run.algo in PEERS:
        return PeerOptions(
            run.algo, **fields, eval_episodes=EVAL_EPISODES, settings=settings_json(run.algo, run.env_id)
        )
    overrides = overrides_for(hyperparams, run.algo, run.env_id) if SUITES[run.suite].tables else {}
    save_every = {"save_every": SUITES[run.suite].save_every} if SUITES[run.suite].save_every else {}
    return load_script(run.algo).Args(**{**overrides, **fields, **HARNESS_FLAGS, **save_every})


def overrides_for(hyperparams: dict, algo: str, env_id: str) -> dict:
    """hyperparams.toml's flags for (algo, env_id): those of the patterns that match env_id ("ALE/*"), then the env's
    own table over them."""
    tables = hyperparams.get(algo, {})
    patterns = [flags for key, flags in tables.items() if key != env_id and fnmatch.fnmatchcase(env_id, key)]
    return {key: value for flags in [*patterns, tables.get(env_id, {})] for key, value in flags.items()}


def command_argv(algo: str, args) -> list[str]:
    """`python <algo>.py` (a peer: `python benchmarks/peers.py`) and every field of args, defaults included, so the
    command repeats the run even if a default changes later: a bool as --x / --no-x, and None left out where None is
    the default."""
    hints = typing.get_type_hints(type(args))
    argv = ["python", "benchmarks/peers.py" if algo in PEERS else f"{algo}.py"]
    for field in dataclasses.fields(args):
        flag, value = "--" + field.name.replace("_", "-"), getattr(args, field.name)
        if hints[field.name] is bool:
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        elif value is not None or field.default is not None:
            argv += [flag, str(value)]
    return argv


def check_round_trip(algo: str, args, argv: list[str]) -> None:
    """Fails unless argv parses back, through the script's own CLI, to args: a wrong type in hyperparams.toml, or a
    field this module cannot spell, shows here rather than in a run."""
    try:
        parsed = tyro.cli(type(args), args=argv[2:])
    except SystemExit:
        raise SystemExit(f"{algo}: cannot parse back its own command: {shlex.join(argv)}") from None
    if parsed != args:
        raise SystemExit(f"{algo}: the command parses back to other Args:\n{shlex.join(argv)}\n{parsed}\n{args}")


def build_command(run: Run, hyperparams: dict) -> list[str]:
    args = run_args(run, hyperparams)
    argv = command_argv(run.algo, args)
    check_round_trip(run.algo, args, argv)
    return argv


def write_json(path: Path, data: dict) -> None:
    """Writes by rename, so that a reader never sees half a file: finished.json must exist only once complete."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def prepare(folder: Path, argv: list[str]) -> None:
    """A run folder with the command to run in it. Where a killed earlier attempt of the same command left a
    checkpoint to resume from (--save-every), the folder stays, and resume.json tells launch to add --resume and
    lists the global steps the run resumed at; otherwise whatever an earlier attempt left goes."""
    if checkpoint := resumable(folder, argv):
        steps = [int(step) for step in resumed_at(folder).split(";") if step]
        steps.append(load_checkpoint(checkpoint)["progress"]["global_step"])
        write_json(folder / "resume.json", {"checkpoint": str(checkpoint.relative_to(folder)), "resumed_at": steps})
        (folder / "finished.json").unlink(missing_ok=True)
        if (folder / "output.txt").exists():  # kept as output.1.txt, …: only the last attempt's evaluation counts
            (folder / "output.txt").rename(folder / f"output.{len(steps)}.txt")
        return
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_json(folder / "command.json", {"argv": argv})


def load_checkpoint(path: Path) -> dict:
    import torch  # only where a run resumes: the runner's process does not need torch otherwise

    return torch.load(path, map_location="cpu", weights_only=True)


def resumable(folder: Path, argv: list[str]) -> Path | None:
    """The checkpoint with a training state that a killed run of argv (one of our scripts, with --save-every) left in
    folder, if any: killed with its runner (no finished.json), or alone by a signal (a negative exit code, or 130 from
    SIGINT). A run that ended on its own, even with an error, starts again from scratch."""
    if "--save-every" not in argv or not (folder / "command.json").exists():
        return None
    finished = folder / "finished.json"
    if finished.exists() and 0 <= json.loads(finished.read_text())["returncode"] != 130:
        return None
    if json.loads((folder / "command.json").read_text())["argv"] != argv:
        return None
    found = sorted(folder.glob(f"runs/*/{Path(argv[1]).stem}.model"))
    return found[0] if found and "progress" in load_checkpoint(found[0]) else None


def launch(folder: Path) -> tuple[subprocess.Popen, float]:
    """Starts the command of folder/command.json in that folder with one thread (runs in parallel must not fight over
    cores), output to output.txt; with resume.json, with --resume. Returns the process and the time the run first
    started (started.json), so that a resumed run's seconds count from its first start, the time between its attempts
    included."""
    argv = json.loads((folder / "command.json").read_text())["argv"]
    resume = json.loads((folder / "resume.json").read_text()) if (folder / "resume.json").exists() else None
    if not (folder / "started.json").exists():
        write_json(folder / "started.json", {"start": time.time()})
    start = json.loads((folder / "started.json").read_text())["start"]
    with open(folder / "output.txt", "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / argv[1]), *argv[2:], *(["--resume", resume["checkpoint"]] if resume else [])],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    return process, start


def resumed_at(folder: Path) -> str:
    """The global steps at which the run in folder resumed, as commands.csv's resumed_at: "" if it never did."""
    resume = folder / "resume.json"
    return ";".join(map(str, json.loads(resume.read_text())["resumed_at"])) if resume.exists() else ""


def finish(folder: Path, returncode: int, start: float) -> None:
    write_json(folder / "finished.json", {"returncode": returncode, "start": start, "seconds": time.time() - start})


def finished(folder: Path, argv: list[str]) -> dict | None:
    """finished.json if the run in folder exited cleanly with exactly this command, else None."""
    try:
        done = json.loads((folder / "finished.json").read_text())
        ran = json.loads((folder / "command.json").read_text())["argv"]
    except FileNotFoundError:
        return None
    return done if done["returncode"] == 0 and ran == argv else None


def read_scalars(run_dir: Path, *keys: str) -> dict[str, list]:
    """The tensorboard scalar events of run_dir under each key, in the order logged."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {key: events.Scalars(key) if key in events.Tags()["scalars"] else [] for key in keys}


def episode_rows(run: Run, folder: Path, start: float) -> list[dict]:
    """Every finished episode of the run in folder, as rows of results/<suite>.csv."""
    (run_dir,) = (folder / "runs").iterdir()
    scalars = read_scalars(run_dir, "charts/episodic_return", "charts/episodic_length")
    returns, lengths = scalars["charts/episodic_return"], scalars["charts/episodic_length"]
    assert len(returns) == len(lengths), f"{run_dir}: {len(returns)} returns but {len(lengths)} lengths"
    algo, env_id, seed = run.key
    return [
        dict(algo=algo, env_id=env_id, seed=seed, global_step=r.step, episodic_return=f"{r.value:.7g}",
             episodic_length=int(l.value), wall_seconds=f"{r.wall_time - start:.2f}")
        for r, l in zip(returns, lengths, strict=True)
    ]  # fmt: skip


def eval_rows(run: Run, folder: Path) -> list[dict]:
    """Each episode of the deterministic evaluation that ended the run in folder, read from the `eval episode` lines
    of its output.txt (our scripts and peers.py print the same), as rows of results/<suite>.eval.csv."""
    algo, env_id, seed = run.key
    return [
        dict(algo=algo, env_id=env_id, seed=seed, episode=int(episode), episodic_return=episodic_return,
             episodic_length=int(length))
        for episode, episodic_return, length in EVAL_LINE.findall((folder / "output.txt").read_text())
    ]  # fmt: skip


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, columns, rows, append: bool = False) -> None:
    """Writes rows, or appends them; a new file gets the header. Only the runner's parent process writes, so appends
    from parallel runs cannot interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not append or not path.exists()
    with open(path, "w" if not append else "a", newline="") as f:
        writer = csv.DictWriter(f, columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def suite_csvs(results_dir: Path, suite: str) -> tuple[Path, Path, Path]:
    """results/<suite>.csv (one row per training episode), results/<suite>.commands.csv (one row per finished run)
    and results/<suite>.eval.csv (one row per episode of the evaluation at the end of each run)."""
    return results_dir / f"{suite}.csv", results_dir / f"{suite}.commands.csv", results_dir / f"{suite}.eval.csv"


# Each of suite_csvs's files with its columns.
SUITE_COLUMNS = (EPISODE_COLUMNS, COMMAND_COLUMNS, EVAL_COLUMNS)


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def speed_markdown(rows: list[dict]) -> str:
    """The Markdown tables of results/speed.csv: each script against raw stepping of its own vector env, and our
    scripts against SB3 / sb3-contrib at matched settings. speed.py writes them, report.py puts them in report.md."""
    by_name = {(row["name"], row["env_id"]): row for row in rows}
    vectors = next((row for row in rows if not row["env_id"].startswith("ALE/")), None)
    pixels = next((row for row in rows if row["env_id"].startswith("ALE/")), None)
    lines = [
        "Measured by `python benchmarks/speed.py"
        + (f" --steps {vectors['steps']}" if vectors else "")
        + (f" --pixel-steps {pixels['steps']}" if pixels else "")
        + f"` on {rows[0]['cpu']}, one thread per process (OMP_NUM_THREADS=1), tensorboard on. Raw SPS steps the same "
        "vector env (the script's num_envs, random actions) just before and just after the script; peak memory is the "
        "process's maximum resident set size. The flat envs run each script's defaults; an Atari game runs the Atari "
        "suite's settings (benchmarks/hyperparams.toml), since the defaults are for flat observations.",
        "",
        "| script | env | script SPS | raw SPS before / after | script / raw | peak memory (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["raw_sps_before"]:
            sps, before, after = (float(row[k]) for k in ("sps", "raw_sps_before", "raw_sps_after"))
            lines.append(
                f"| `{row['name']}` | {row['env_id']} | {sps:,.0f} | {before:,.0f} / {after:,.0f} | "
                f"{sps / ((before + after) / 2):.3f} | {float(row['peak_mib']):.0f} |"
            )
    if pixels and ("ppo_clip", pixels["env_id"]) in by_name:
        clip = float(by_name["ppo_clip", pixels["env_id"]]["sps"])
        ratios = [f"{name} {float(by_name[name, pixels['env_id']]['sps']) / clip:.2f}×" for name in ("npg", "trpo")
                  if (name, pixels["env_id"]) in by_name]  # fmt: skip
        if ratios:
            lines += [
                "",
                f"On {pixels['env_id']}, the trust-region scripts ran at {' and '.join(ratios)} ppo_clip's SPS.",
            ]
    pairs = [(by_name[ours, their["env_id"]], their) for ours, name in SPEED_PAIRS for their in rows
             if their["name"] == name and (ours, their["env_id"]) in by_name]  # fmt: skip
    if pairs:
        lines += [
            "",
            "At matched settings (num_envs, batch and minibatch sizes, epochs, the same steps; on Hopper-v5 64×64 tanh "
            "networks and VecNormalize for observations and rewards; on an Atari game the same env, from our "
            "make_one, and a Nature CNN whose encoder π and V share, SB3's CnnPolicy), on CPU:",
            "",
            "| ours | theirs | env | ours SPS | theirs SPS | ours / theirs | peak memory ours / theirs (MiB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for ours, their in pairs:
            lines.append(
                f"| `{ours['name']}` | {their['name']} | {their['env_id']} | {float(ours['sps']):,.0f} | "
                f"{float(their['sps']):,.0f} | {float(ours['sps']) / float(their['sps']):.2f} | "
                f"{float(ours['peak_mib']):.0f} / {float(their['peak_mib']):.0f} |"
            )
    return "\n".join(lines) + "\n"
