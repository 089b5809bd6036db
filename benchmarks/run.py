"""Runs a suite of benchmark runs (scripts × env ids × seeds, see SUITES in common.py, and with --peers the scripts'
peers of peers.py) and appends every finished episode to benchmarks/results/<suite>.csv, and the deterministic
evaluation that ends each run to benchmarks/results/<suite>.eval.csv.

    python benchmarks/run.py --suite classic                          # 2 runs at a time on this machine
    python benchmarks/run.py --suite mujoco --scripts trpo --envs Hopper-v5 --seeds 1 2
    python benchmarks/run.py --suite mujoco --peers                   # and SB3 / sb3-contrib beside them
    nohup python benchmarks/run.py --suite mujoco > mujoco.log 2>&1 &   # detached; `tail -f mujoco.log`
    python benchmarks/run.py --suite mujoco --backend slurm --partition cpu --time 06:00:00

It resumes: a run recorded in results/<suite>.commands.csv is skipped, and a run killed half-way is redone from
scratch, or, in a suite whose runs save checkpoints (the atari suite's --save-every), resumed from its last checkpoint
in its own folder (our scripts; a peer starts again); commands.csv's resumed_at gives the steps at which it resumed.
Each run's command carries every flag, defaults and hyperparams.toml's overrides (a peer: its settings) included, so
pasting the printed line into a shell repeats the run; each runs in its own folder under benchmarks/work/, with
OMP_NUM_THREADS=1.
"""

import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro
from common import (
    COMMAND_COLUMNS,
    EPISODE_COLUMNS,
    EVAL_COLUMNS,
    HYPERPARAMS,
    RESULTS,
    ROOT,
    SUITE_COLUMNS,
    WORK,
    Run,
    build_command,
    episode_rows,
    eval_rows,
    finish,
    finished,
    launch,
    load_hyperparams,
    prepare,
    read_csv,
    resumed_at,
    suite_csvs,
    suite_runs,
    write_csv,
)


@dataclass
class Options:
    suite: str = "classic"
    """the suite: classic, mujoco, atari, gym-mujoco or smoke (SUITES in benchmarks/common.py)"""
    scripts: tuple[str, ...] = ()
    """run only these of the suite's scripts, or peers such as sb3-ppo (default: all the scripts)"""
    peers: bool = False
    """also run the peers of the scripts (benchmarks/peers.py): sb3-a2c, sb3-trpo, sb3-ppo and their -defaults"""
    envs: tuple[str, ...] = ()
    """run only these of the suite's env ids (default: all)"""
    seeds: tuple[int, ...] = ()
    """run only these of the suite's seeds (default: all)"""
    backend: Literal["local", "slurm"] = "local"
    """local: child processes on this machine; slurm: one job array, one task per run"""
    workers: int = 2
    """local: runs at a time, each on one thread"""
    partition: str | None = None
    """slurm: the partition (default: the cluster's default)"""
    time: str = "04:00:00"
    """slurm: the time limit of each task; a task that hits it is redone on the next invocation"""
    cpus_per_task: int = 1
    """slurm: CPUs per task (each run uses one thread)"""
    sbatch_args: tuple[str, ...] = ()
    """slurm: further sbatch flags, e.g. --sbatch-args=--account=rl"""
    wait: bool = True
    """slurm: wait for the tasks and collect them; --no-wait submits and exits (then collect with --collect)"""
    poll_seconds: float = 30.0
    """slurm: how often to look for finished tasks"""
    collect: bool = False
    """only record runs that have finished in their folders (e.g. Slurm tasks); start nothing"""
    redo: bool = False
    """forget the selected runs' results and run them again (e.g. after changing hyperparams.toml)"""
    dry_run: bool = False
    """print the commands and exit"""
    hyperparams: Path = HYPERPARAMS
    """per-(script, env) flags that differ from the scripts' defaults"""
    work_dir: Path = WORK
    """where the run folders go"""
    results_dir: Path = RESULTS
    """where <suite>.csv, <suite>.commands.csv and <suite>.eval.csv go"""


def clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else f"{seconds / 86400:.1f} days"


class Progress:
    """Counts finished runs and estimates the time left from the env steps done so far in this invocation."""

    def __init__(self, total: int, done: int, steps_left: int):
        self.total, self.done, self.steps_left, self.steps_done = total, done, steps_left, 0
        self.start = time.time()

    def line(self, run: Run) -> str:
        self.done += 1
        self.steps_done += run.total_timesteps
        self.steps_left -= run.total_timesteps
        elapsed = time.time() - self.start
        left = clock(elapsed * self.steps_left / self.steps_done) if self.steps_left else clock(0)
        return f"{self.done}/{self.total} runs done | elapsed {clock(elapsed)} | about {left} left"


def record(run: Run, folder: Path, results_dir: Path, argv: list[str]) -> str:
    """Appends the finished run's episodes and its evaluation, then its command (which marks it done), and says how
    it went."""
    start, seconds = (json.loads((folder / "finished.json").read_text())[k] for k in ("start", "seconds"))
    rows, evaluation = episode_rows(run, folder, start), eval_rows(run, folder)
    episodes_csv, commands_csv, eval_csv = suite_csvs(results_dir, run.suite)
    write_csv(episodes_csv, EPISODE_COLUMNS, rows, append=True)
    write_csv(eval_csv, EVAL_COLUMNS, evaluation, append=True)
    algo, env_id, seed = run.key
    command = dict(algo=algo, env_id=env_id, seed=seed, episodes=len(rows), wall_seconds=f"{seconds:.1f}",
                   resumed_at=resumed_at(folder))  # fmt: skip
    write_csv(commands_csv, COMMAND_COLUMNS, [{**command, "command": shlex.join(argv)}], append=True)
    last, final = mean_return(rows[-100:]), mean_return(evaluation)
    return (f"done {run} in {clock(seconds)}: {len(rows)} episodes, mean of the last 100 {last:.1f}, "
            f"evaluation {final:.1f} over {len(evaluation)} episodes")  # fmt: skip


def mean_return(rows: list[dict]) -> float:
    return np.mean([float(row["episodic_return"]) for row in rows]) if rows else np.nan


def failure(run: Run, folder: Path) -> str:
    tail = (folder / "output.txt").read_text().splitlines()[-5:] if (folder / "output.txt").exists() else []
    return "\n    ".join([f"FAILED {run}: see {folder / 'output.txt'}", *tail])


def forget(suite: str, results_dir: Path, keep: set) -> None:
    """Rewrites the suite's CSVs without the episodes, evaluations and commands of runs whose key is not in keep."""
    for path, columns in zip(suite_csvs(results_dir, suite), SUITE_COLUMNS, strict=True):
        rows = read_csv(path)
        kept = [row for row in rows if (row["algo"], row["env_id"], row["seed"]) in keep]
        if len(kept) < len(rows):
            write_csv(path, columns, kept)


def run_local(todo: list[Run], commands: dict, options: Options, progress: Progress) -> int:
    """Runs todo, options.workers at a time, recording each run as it ends; returns the number that failed. On
    Ctrl-C or SIGTERM the running children are stopped, so that a later invocation can redo them from scratch."""
    queue, running, failed = list(todo), {}, 0
    try:
        while queue or running:
            while queue and len(running) < options.workers:
                run = queue.pop(0)
                folder = run.folder(options.work_dir)
                prepare(folder, commands[run])
                again = f" (resumes at step {resumed_at(folder).split(';')[-1]})" if resumed_at(folder) else ""
                print(f"start {run}{again}: {shlex.join(commands[run])}", flush=True)
                running[run] = launch(folder)
            time.sleep(0.2)
            for run, (process, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[run]
                folder = run.folder(options.work_dir)
                finish(folder, process.returncode, start)
                if process.returncode == 0:
                    print(record(run, folder, options.results_dir, commands[run]), "|", progress.line(run), flush=True)
                else:
                    failed += 1
                    print(failure(run, folder), flush=True)
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait()
    return failed


def slurm_job_active(job: str) -> bool:
    """Whether any task of the job is still pending or running (squeue forgets finished jobs after a while)."""
    queued = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True)
    return queued.returncode == 0 and bool(queued.stdout.strip())


def in_flight(folder: Path) -> str | None:
    """The Slurm job that is still working on this run folder, if any: such a run must not be started again."""
    job_file = folder / "slurm_job"
    if not job_file.exists() or (folder / "finished.json").exists():
        return None
    job = job_file.read_text()
    return job if slurm_job_active(job) else None


def run_slurm(todo: list[Run], commands: dict, options: Options, progress: Progress) -> int:
    """Submits todo as one job array, each task running task.py in its run folder; unless --no-wait, records the runs
    as their tasks finish. Returns the number that did not finish cleanly."""
    slurm_dir = options.work_dir / todo[0].suite / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folders = [run.folder(options.work_dir).resolve() for run in todo]
    for run, folder in zip(todo, folders, strict=True):
        prepare(folder, commands[run])
        print(f"submit {run}: {shlex.join(commands[run])}")
    tasks = slurm_dir / f"{stamp}.tasks"
    tasks.write_text("".join(f"{folder}\n" for folder in folders))
    script = slurm_dir / f"{stamp}.sh"
    script.write_text(
        "#!/bin/bash\n"
        f'folder=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(tasks.resolve()))})\n'
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(ROOT / "benchmarks" / "task.py"))} "$folder"\n'
    )
    sbatch = ["sbatch", "--parsable", f"--array=0-{len(todo) - 1}", f"--job-name=bench-{todo[0].suite}"]
    sbatch += [f"--time={options.time}", f"--cpus-per-task={options.cpus_per_task}", f"--chdir={ROOT}"]
    sbatch += [f"--output={slurm_dir.resolve()}/%A_%a.out", *options.sbatch_args]
    sbatch += [f"--partition={options.partition}"] if options.partition else []
    print(shlex.join([*sbatch, str(script)]), flush=True)
    submitted = subprocess.run([*sbatch, str(script)], capture_output=True, text=True)
    if submitted.returncode:
        raise SystemExit(f"sbatch failed: {submitted.stderr.strip()}")
    job = submitted.stdout.strip().split(";")[0]  # --parsable prints "jobid" or "jobid;cluster"
    for folder in folders:
        (folder / "slurm_job").write_text(job)
    print(f"submitted job array {job} with {len(todo)} tasks", flush=True)
    if not options.wait:
        print("collect the results later with: python benchmarks/run.py --collect " + shlex.join(sys.argv[1:]))
        return 0
    pending, failed = dict(zip(todo, folders, strict=True)), 0
    while pending:
        active = slurm_job_active(job)
        for run, folder in list(pending.items()):
            if (folder / "finished.json").exists():
                del pending[run]
                if finished(folder, commands[run]):
                    print(record(run, folder, options.results_dir, commands[run]), "|", progress.line(run), flush=True)
                else:
                    failed += 1
                    print(failure(run, folder), flush=True)
        if not active:
            break
        time.sleep(options.poll_seconds)
    for run in pending:
        print(f"FAILED {run}: its task ended without finishing (time limit? node failure?); see {slurm_dir}")
    return failed + len(pending)


def main(options: Options) -> int:
    runs = suite_runs(options.suite, options.scripts, options.envs, options.seeds, options.peers)
    hyperparams = load_hyperparams(options.hyperparams)
    commands = {run: build_command(run, hyperparams) for run in runs}
    if options.dry_run:
        print("\n".join(shlex.join(argv) for argv in commands.values()))
        return 0
    commands_csv = suite_csvs(options.results_dir, options.suite)[1]
    recorded = {(row["algo"], row["env_id"], row["seed"]): row["command"] for row in read_csv(commands_csv)}
    if options.redo:
        recorded = {key: command for key, command in recorded.items() if key not in {run.key for run in runs}}
    # Episodes (or evaluations) of a run without its command row were appended by an invocation killed before it
    # finished recording.
    forget(options.suite, options.results_dir, keep=set(recorded))
    if stale := [run for run in runs if run.key in recorded and recorded[run.key] != shlex.join(commands[run])]:
        print(f"{len(stale)} recorded runs were made with other flags, e.g. {stale[0]}; --redo reruns them")
    done = sum(run.key in recorded for run in runs)
    print(f"suite {options.suite}: {len(runs)} runs, {done} already recorded", flush=True)
    todo, queued = [], {}
    for run in runs:
        folder = run.folder(options.work_dir)
        if run.key in recorded:
            continue
        if not options.redo and finished(folder, commands[run]):  # a Slurm task, or a parent killed while recording
            print(record(run, folder, options.results_dir, commands[run]), flush=True)
        elif job := in_flight(folder):
            queued[run] = job
        else:
            todo.append(run)
    if queued:
        jobs = ", ".join(sorted(set(queued.values())))
        print(f"{len(queued)} runs are still queued or running in Slurm job {jobs}; --collect records them later")
    if options.collect or not todo:
        print(f"{len(todo)} runs not started" if todo else "all runs recorded" if not queued else "nothing to start")
        return 0
    progress = Progress(len(runs), len(runs) - len(todo), sum(run.total_timesteps for run in todo))
    backend = run_local if options.backend == "local" else run_slurm
    failed = backend(todo, commands, options, progress)
    print(f"{failed} runs failed; run the same command again to redo them" if failed else "all runs recorded")
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that run_local's cleanup also runs on `kill`
    sys.exit(main(tyro.cli(Options)))
