"""The benchmark runner: it records each run in the three CSVs, skips recorded runs, resumes a killed one from its
checkpoint, takes the peers' runs and their evaluation, forgets a run on request, and runs the smoke suite on a real
single-node Slurm."""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tyro
from conftest import ROOT, common, run, unavailable


def smoke_options(tmp_path: Path, row: str) -> run.Options:
    """The runner on seed 1 of one row of the smoke suite, with its folders and CSVs in tmp_path."""
    return run.Options(suite="smoke", scripts=(row,), seeds=(1,), work_dir=tmp_path / "work",
                       results_dir=tmp_path / "results")  # fmt: skip


def check_recorded(options: run.Options, program: str) -> tuple[list[dict], list[dict]]:
    """The one run of options recorded in all three CSVs: its training episodes, its 10 evaluation episodes, and its
    command, which starts with program. Returns the episode and evaluation rows."""
    episodes_csv, commands_csv, eval_csv = common.suite_csvs(options.results_dir, "smoke")
    assert episodes_csv.read_text().splitlines()[0].startswith("algo,env_id,seed,global_step,episodic_return,")
    episodes, evaluation = common.read_csv(episodes_csv), common.read_csv(eval_csv)
    assert len(episodes) > 5 and all(float(row["wall_seconds"]) > 0 for row in episodes)
    assert [int(row["episode"]) for row in evaluation] == list(range(1, 11))
    assert all(row["algo"] == options.scripts[0] and int(row["episodic_length"]) > 0 for row in evaluation)
    (command,) = common.read_csv(commands_csv)
    assert int(command["episodes"]) == len(episodes) and command["command"].startswith(program)
    return episodes, evaluation


@pytest.mark.slow  # trains: tiny runs of the smoke suite
def test_runner_records_skips_collects_and_redoes_a_killed_run(tmp_path, capsys):
    """One real smoke run (2,048 steps), then: a rerun skips it; a run finished in its folder but not recorded is
    collected without running; a run killed half-way (no finished.json) before any checkpoint is redone from scratch."""
    options = smoke_options(tmp_path, "pg")
    episodes_csv, commands_csv, eval_csv = common.suite_csvs(options.results_dir, "smoke")
    folder = common.suite_runs("smoke", scripts=["pg"], seeds=[1])[0].folder(options.work_dir)

    assert run.main(options) == 0
    out = capsys.readouterr().out
    assert "start pg CartPole-v1 seed 1: python pg.py --exp-name pg" in out and "1/1 runs done" in out
    first, evaluation = check_recorded(options, "python pg.py ")
    assert "--save-model" in common.read_csv(commands_csv)[0]["command"]

    assert run.main(options) == 0
    assert "1 already recorded" in (out := capsys.readouterr().out) and "start" not in out

    commands_csv.unlink()  # the parent was killed after the run had finished, before it recorded it
    assert run.main(options) == 0
    assert "done pg" in (out := capsys.readouterr().out) and "start" not in out
    assert common.read_csv(episodes_csv) == first and common.read_csv(eval_csv) == evaluation

    commands_csv.unlink()  # and now killed while the run was still going, before its first checkpoint
    (folder / "finished.json").unlink()
    for checkpoint in folder.glob("runs/*/pg.model"):
        checkpoint.unlink()
    (folder / "runs" / "leftover").mkdir()
    assert run.main(options) == 0
    assert "start pg" in capsys.readouterr().out
    assert not (folder / "runs" / "leftover").exists()
    again = common.read_csv(episodes_csv)
    strip = [{k: v for k, v in row.items() if k != "wall_seconds"} for row in first]
    assert [{k: v for k, v in row.items() if k != "wall_seconds"} for row in again] == strip  # bit-reproducible seed
    assert common.read_csv(eval_csv) == evaluation


@pytest.mark.slow  # trains: a tiny run of the smoke suite, which saves a checkpoint every 2 of its 4 iterations
def test_runner_resumes_a_killed_run_from_its_checkpoint(tmp_path, capsys, monkeypatch, sigint_raises):
    """A smoke run killed by a SIGINT in its third iteration leaves the checkpoint of its second in its folder: the
    runner resumes it there (--resume, not from scratch), records each step's episodes once, its evaluation, its
    original command and the step it resumed at; killed again later, it lists both steps."""
    import pg

    options = smoke_options(tmp_path, "pg")
    (smoke_run,) = common.suite_runs("smoke", scripts=["pg"], seeds=[1])
    folder, argv = smoke_run.folder(options.work_dir), common.build_command(smoke_run, common.load_hyperparams())
    assert argv[argv.index("--save-every") + 1] == "2"
    common.prepare(folder, argv)
    common.write_json(folder / "started.json", {"start": time.time()})  # as launch does, for the first attempt
    calls, update = [], pg.update

    def interrupted(*args, **kwargs):  # a real SIGINT as the third update starts, as a killed session would leave it
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return update(*args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.chdir(folder)
        patch.setattr(pg, "update", interrupted)
        pg.main(tyro.cli(pg.Args, args=argv[2:]))
    assert not (folder / "finished.json").exists()
    assert run.main(options) == 0
    assert "start pg CartPole-v1 seed 1 (resumes at step 1024): python pg.py" in capsys.readouterr().out
    episodes, _ = check_recorded(options, "python pg.py ")
    (command,) = common.read_csv(common.suite_csvs(options.results_dir, "smoke")[1])
    assert command["resumed_at"] == "1024" and command["command"] == shlex.join(argv)
    steps = [int(row["global_step"]) for row in episodes]  # those the killed attempt logged after 1,024 are purged
    assert steps == sorted(steps) and 1024 in steps and 1536 in steps and steps[-1] == 2048
    assert (folder / "output.txt").read_text().startswith("step     1,536 |")  # the resumed attempt's iteration 3
    assert common.resumable(folder, argv) is None  # finished: a later attempt would start again
    (folder / "finished.json").unlink()  # killed again, after its last checkpoint: it resumes at 2048 this time
    assert [int(s) for s in common.resumed_at(folder).split(";")] == [1024]
    common.prepare(folder, argv)
    assert common.resumed_at(folder) == "1024;2048"


@pytest.mark.parametrize("returncode, resumes", [(None, True), (-15, True), (-9, True), (130, True), (1, False),
                                                  (0, False)])  # fmt: skip
def test_a_run_killed_by_a_signal_resumes_and_one_that_ended_starts_again(tmp_path, returncode, resumes):
    """No finished.json (killed with its runner), a negative exit code or 130 (a signal): prepare keeps the folder and
    points launch at the checkpoint, its output kept as output.1.txt; exit codes 0 and 1 (ended on its own): it starts
    again from scratch. A checkpoint without a training state never resumes."""
    import torch

    argv, folder = ["python", "pg.py", "--save-every", "2"], tmp_path / "run"
    common.prepare(folder, argv)
    (folder / "runs" / "x").mkdir(parents=True)
    torch.save({"progress": {"global_step": 512}}, folder / "runs" / "x" / "pg.model")
    (folder / "output.txt").write_text("step 512\n")
    if returncode is not None:
        common.write_json(folder / "finished.json", {"returncode": returncode, "start": 0.0, "seconds": 1.0})
    common.prepare(folder, argv)
    assert (folder / "runs").exists() == resumes and (folder / "output.1.txt").exists() == resumes
    assert common.resumed_at(folder) == ("512" if resumes else "")
    if resumes:
        assert not (folder / "finished.json").exists()
        torch.save({}, folder / "runs" / "x" / "pg.model")  # saved with --save-model only
        assert common.resumable(folder, argv) is None


@pytest.mark.slow  # trains: a tiny run of a peer
def test_a_peer_runs_through_the_runner_into_the_three_csvs(tmp_path, capsys):
    """SB3 PPO at rl-zoo's CartPole-v1 settings for the smoke suite's 2,048 steps, run as our scripts are: its
    episodes, its 10 evaluation episodes and its pasteable command land in the CSVs; a rerun skips it."""
    options = smoke_options(tmp_path, "sb3-ppo")
    assert run.main(options) == 0
    assert "start sb3-ppo CartPole-v1 seed 1: python benchmarks/peers.py --peer sb3-ppo" in capsys.readouterr().out
    episodes, _ = check_recorded(options, "python benchmarks/peers.py --peer sb3-ppo --env-id CartPole-v1 --seed 1 ")
    assert max(int(row["global_step"]) for row in episodes) <= 2048
    assert run.main(options) == 0
    assert "1 already recorded" in (out := capsys.readouterr().out) and "start" not in out


EVAL_OUTPUT = """step     2,048 | return     21.5 | SPS  1,000 |     2 s, 0 s left
model saved to runs/CartPole-v1__pg__1__1_x/pg.model
eval episode 1: return 500.00 in 500 steps (truncated)
eval episode 2: return -12.50 in 13 steps
eval: 243.75 ± 256.25 over 2 episodes of CartPole-v1
"""


def test_eval_lines_become_eval_rows(tmp_path):
    """The lines our scripts' evaluate and peers.py print, with or without (truncated), and nothing else."""
    (tmp_path / "output.txt").write_text(EVAL_OUTPUT)
    r = common.Run("classic", "pg", "CartPole-v1", 4, 100)
    assert common.eval_rows(r, tmp_path) == [
        dict(algo="pg", env_id="CartPole-v1", seed="4", episode=1, episodic_return="500.00", episodic_length=500),
        dict(algo="pg", env_id="CartPole-v1", seed="4", episode=2, episodic_return="-12.50", episodic_length=13),
    ]


def test_forget_drops_a_run_from_all_three_csvs(tmp_path):
    """--redo, or an invocation killed while recording: the run's training episodes, evaluation and command all go."""
    keep, drop = ("pg", "CartPole-v1", "1"), ("sb3-a2c", "CartPole-v1", "1")
    for path, columns in zip(common.suite_csvs(tmp_path, "classic"), common.SUITE_COLUMNS, strict=True):
        rows = [dict.fromkeys(columns, "0") | dict(zip(columns, key, strict=False)) for key in (keep, drop)]
        common.write_csv(path, columns, rows)
    run.forget("classic", tmp_path, keep={keep})
    for path in common.suite_csvs(tmp_path, "classic"):
        assert [(row["algo"], row["env_id"], row["seed"]) for row in common.read_csv(path)] == [keep]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """ClusterName=bench
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture
def slurm(tmp_path_factory):
    """A one-node Slurm on this machine (munged, slurmctld, slurmd, all as root, in a temporary folder); yields the
    environment that points sbatch and squeue at it. Skips where it cannot start."""
    binaries = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
    if missing := [name for name in binaries if not shutil.which(name)]:
        unavailable(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        unavailable("slurmd must run as root")
    folder = tmp_path_factory.mktemp("slurm")  # short: munged's socket path must fit in 108 bytes
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    (folder / "munge.key").write_bytes(os.urandom(128))
    (folder / "munge.key").chmod(0o600)
    memory = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) // 1024
    conf = SLURM_CONF.format(dir=folder, ctld_port=free_port(), d_port=free_port(), host=socket.gethostname(),
                             cpus=len(os.sched_getaffinity(0)), memory=memory)  # fmt: skip
    (folder / "slurm.conf").write_text(conf)
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    munge = [f"--socket={folder}/munge.sock", f"--pid-file={folder}/munged.pid"]
    try:
        daemons = (
            ["munged", "--force", *munge, f"--key-file={folder}/munge.key", f"--log-file={folder}/munged.log",
             f"--seed-file={folder}/munged.seed"],
            ["slurmctld", "-i"],
            ["slurmd", "-N", "localhost"],
        )  # fmt: skip
        for argv in daemons:
            result = subprocess.run(argv, env=env, capture_output=True, text=True)
            if result.returncode:
                unavailable(f"{argv[0]} did not start: {result.stderr.strip()}")
        for _ in range(60):
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            logs = "".join((folder / name).read_text()[-500:] for name in ("slurmctld.log", "slurmd.log"))
            unavailable(f"the Slurm node did not become idle (state {state.strip()!r}):\n{logs}")
        yield env
    finally:
        for name in ("slurmd", "slurmctld", "munged"):  # each by the pid it wrote
            stop(folder / f"{name}.pid")


def stop(pid_file: Path) -> None:
    """SIGTERM to the daemon whose pid is in pid_file, then SIGKILL if it is still there after 10 s."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(40):
        if not alive(pid):
            return
        time.sleep(0.25)
    os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether pid runs; a zombie (an exited daemon that nobody reaped) does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow  # trains: tiny runs of the smoke suite
def test_slurm_backend_runs_the_smoke_suite(slurm, tmp_path):
    """The smoke suite as Slurm job arrays: seed 1 waited for; seed 2 submitted with --no-wait, not submitted again
    while its tasks run, and recorded by --collect. Then every run is in the CSVs, and a rerun submits nothing."""

    def runner(*flags: str) -> str:
        folders = ["--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
        command = [sys.executable, "benchmarks/run.py", "--suite", "smoke", "--backend", "slurm", *folders, *flags]
        result = subprocess.run(command, cwd=ROOT, env=slurm, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    out = runner("--seeds", "1", "--poll-seconds", "1", "--time", "00:10:00")
    assert "submitted job array" in out and "2/2 runs done" in out
    # Held, so that its tasks are still queued when the runner looks again: a smoke run ends faster than it starts.
    submitted = runner("--seeds", "2", "--no-wait", "--sbatch-args=--hold")
    assert "submitted job array" in submitted
    out = runner("--seeds", "2", "--no-wait")
    assert "2 runs are still queued or running" in out and "submit" not in out
    job = re.search(r"submitted job array (\S+)", submitted).group(1)
    subprocess.run(["scontrol", "release", job], env=slurm, check=True, capture_output=True)
    for _ in range(120):  # squeue is quick; a runner process is not (it imports torch)
        if not subprocess.run(["squeue", "-h", "-j", job], env=slurm, capture_output=True, text=True).stdout.strip():
            break
        time.sleep(0.5)
    assert "all runs recorded" in runner("--collect")
    episodes_csv, commands_csv, eval_csv = common.suite_csvs(tmp_path / "results", "smoke")
    keys = {(row["algo"], row["seed"]) for row in common.read_csv(episodes_csv)}
    assert keys == {("pg", "1"), ("pg", "2"), ("ppo_clip", "1"), ("ppo_clip", "2")}
    assert len(common.read_csv(commands_csv)) == 4 and len(common.read_csv(eval_csv)) == 4 * 10
    out = runner()
    assert "4 already recorded" in out and "submit" not in out
