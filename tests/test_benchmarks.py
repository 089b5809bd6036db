"""The benchmark harness: commands that reproduce their run, resuming after a kill, the CSVs, a deterministic report
that README's numbers come from, and the Slurm backend on a real single-node Slurm."""

import dataclasses
import importlib
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import tyro

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
common, report, run = (importlib.import_module(name) for name in ("common", "report", "run"))


def varied(args):
    """args with every field moved off its default: bools flipped, numbers changed, None replaced, a quote and a
    space in a string, so that a command that drops or misspells any field fails to round-trip."""
    hints, changes = typing.get_type_hints(type(args)), {}
    for field in dataclasses.fields(args):
        value, kind = getattr(args, field.name), hints[field.name]
        options = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
        kind = options[0]
        if kind is bool:
            changes[field.name] = not value if value is not None else True
        elif kind in (int, float):
            changes[field.name] = kind(value * 3 + 1) if value is not None else kind(2)
        elif kind is str and field.name not in ("env_id", "device"):
            changes[field.name] = "a b'c"
    return dataclasses.replace(args, **changes)


@pytest.mark.parametrize("algo", common.SCRIPTS)
def test_command_round_trips_through_tyro(algo):
    module = common.load_script(algo)
    for args in (module.Args(), varied(module.Args())):
        argv = shlex.split(shlex.join(common.command_argv(algo, args)))
        assert argv[:2] == ["python", f"{algo}.py"]
        assert tyro.cli(module.Args, args=argv[2:]) == args
        for field in dataclasses.fields(args):
            flag = "--" + field.name.replace("_", "-")
            assert getattr(args, field.name) is None or flag in argv or "--no-" + flag[2:] in argv


def test_every_suite_builds_with_the_committed_hyperparams():
    hyperparams = common.load_hyperparams()
    for suite, spec in common.SUITES.items():
        runs = common.suite_runs(suite)
        assert len(runs) == len(spec.scripts) * len(spec.envs) * len(spec.seeds)
        for r in runs:
            argv = common.build_command(r, hyperparams)
            assert argv[argv.index("--total-timesteps") + 1] == str(spec.envs[r.env_id])


def test_hyperparams_apply_to_their_script_and_env_only(tmp_path):
    path = tmp_path / "hyperparams.toml"
    path.write_text('[ppo_clip."CartPole-v1"]\nnum-steps = 128\nclip_coef = 0.1\n')
    hyperparams = common.load_hyperparams(path)
    (tuned,) = common.suite_runs("smoke", scripts=["ppo_clip"], seeds=[1])
    argv = common.build_command(tuned, hyperparams)
    assert argv[argv.index("--num-steps") + 1] == "128" and argv[argv.index("--clip-coef") + 1] == "0.1"
    assert argv[argv.index("--total-timesteps") + 1] == "2048"
    (other,) = common.suite_runs("smoke", scripts=["pg"], seeds=[1])
    assert common.build_command(other, hyperparams) == common.build_command(other, {})
    for bad in ('[ppo_clip."CartPole-v1"]\nno_such_flag = 1\n', '[ppo_clip."CartPole-v1"]\nseed = 3\n', "[nope.x]\n"):
        path.write_text(bad)
        with pytest.raises(SystemExit):
            common.load_hyperparams(path)
    path.write_text('[ppo_clip."CartPole-v1"]\nnum_steps = "many"\n')
    with pytest.raises(SystemExit):
        common.build_command(tuned, common.load_hyperparams(path))


@pytest.mark.slow  # trains: tiny runs of the smoke suite
def test_runner_records_skips_collects_and_redoes_a_killed_run(tmp_path, capsys):
    """One real smoke run (2,048 steps), then: a rerun skips it; a run finished in its folder but not recorded is
    collected without running; a run killed half-way (no finished.json) is redone from scratch."""
    options = run.Options(suite="smoke", scripts=("pg",), seeds=(1,), work_dir=tmp_path / "work",
                          results_dir=tmp_path / "results")  # fmt: skip
    episodes_csv, commands_csv = common.suite_csvs(options.results_dir, "smoke")
    folder = common.suite_runs("smoke", scripts=["pg"], seeds=[1])[0].folder(options.work_dir)

    assert run.main(options) == 0
    out = capsys.readouterr().out
    assert "start pg CartPole-v1 seed 1: python pg.py --exp-name pg" in out and "1/1 runs done" in out
    assert episodes_csv.read_text().splitlines()[0].startswith("algo,env_id,seed,global_step,episodic_return,")
    first = common.read_csv(episodes_csv)
    assert len(first) > 20 and all(float(row["wall_seconds"]) > 0 for row in first)
    (command,) = common.read_csv(commands_csv)
    assert int(command["episodes"]) == len(first) and command["command"].startswith("python pg.py ")

    assert run.main(options) == 0
    assert "1 already recorded" in (out := capsys.readouterr().out) and "start" not in out

    commands_csv.unlink()  # the parent was killed after the run had finished, before it recorded it
    assert run.main(options) == 0
    assert "done pg" in (out := capsys.readouterr().out) and "start" not in out
    assert common.read_csv(episodes_csv) == first

    commands_csv.unlink()  # and now killed while the run was still going
    (folder / "finished.json").unlink()
    (folder / "runs" / "leftover").mkdir()
    assert run.main(options) == 0
    assert "start pg" in capsys.readouterr().out
    assert not (folder / "runs" / "leftover").exists()
    again = common.read_csv(episodes_csv)
    strip = [{k: v for k, v in row.items() if k != "wall_seconds"} for row in first]
    assert [{k: v for k, v in row.items() if k != "wall_seconds"} for row in again] == strip  # bit-reproducible seed


def synthetic_results(results_dir: Path) -> None:
    """classic.csv: pg's seed 1 scores 100 over its last 100 episodes and seed 2 scores 200; ppo_clip's seed 1
    scores 500 from its episode 111 on, so its 20-episode mean first reaches 475 at episode 129 (19 × 500 + 10), step
    1290, second 12.9."""
    rows = []
    for seed, score in ((1, 100.0), (2, 200.0)):
        rows += [dict(algo="pg", env_id="CartPole-v1", seed=seed, global_step=10 * i, episodic_return=0.0 if i < 50
                      else score, episodic_length=10, wall_seconds=i / 10) for i in range(1, 151)]  # fmt: skip
    rows += [dict(algo="ppo_clip", env_id="CartPole-v1", seed=1, global_step=10 * i, episodic_return=500.0 if i > 110
                  else 10.0, episodic_length=10, wall_seconds=i / 10) for i in range(1, 151)]  # fmt: skip
    rows += [dict(algo="ppo_clip", env_id="Pendulum-v1", seed=3, global_step=10 * i, episodic_return=-i,
                  episodic_length=200, wall_seconds=i) for i in range(1, 11)]  # fmt: skip
    rows.append(dict(rows[-1], algo="trpo"))  # a run without a row in commands.csv, so not finished: not counted
    common.write_csv(results_dir / "classic.csv", common.EPISODE_COLUMNS, rows)
    runs = {(row["algo"], row["env_id"], row["seed"]) for row in rows[:-1]}
    common.write_csv(
        results_dir / "classic.commands.csv",
        ["algo", "env_id", "seed"],
        [dict(zip(("algo", "env_id", "seed"), run, strict=True)) for run in runs],
    )


def test_report_is_deterministic_and_computes_cleanrls_score(tmp_path):
    synthetic_results(tmp_path)
    text = report.render(tmp_path, "")
    assert "| `pg` | 150.0 ± 50.0 (2) | – |" in text
    assert "| `ppo_clip` | 206.0 ± 0.0 (1) | -5.5 ± 0.0 (1) |" in text  # 40 episodes of 500, 60 of 10
    assert "| `pg` | 0/2 | – | – |" in text and "| `ppo_clip` | 1/1 | 1,290 | 12.9 |" in text
    assert "![classic: Pendulum-v1](classic-Pendulum-v1.png)" in text and "Tianshou" in text and "trpo" not in text
    for out_dir in (tmp_path / "a", tmp_path / "b"):
        report.main(report.Options(results_dir=tmp_path, out_dir=out_dir))
        assert (out_dir / "report.md").read_text() == "# Benchmark report\n\n" + text
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "a" / "classic-CartPole-v1.png").stat().st_size > 0


def test_readme_block_is_the_report_of_the_committed_csvs():
    """README's numbers come from report.py: after a change to the CSVs, `python benchmarks/report.py --readme`."""
    readme = (ROOT / "README.md").read_text()
    assert report.readme_block(readme) == report.render(common.RESULTS, "benchmarks/report/")
    assert report.replace_block(readme, report.readme_block(readme)) == readme


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
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root")
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
                pytest.skip(f"{argv[0]} did not start: {result.stderr.strip()}")
        for _ in range(60):
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            logs = "".join((folder / name).read_text()[-500:] for name in ("slurmctld.log", "slurmd.log"))
            pytest.skip(f"the Slurm node did not become idle (state {state.strip()!r}):\n{logs}")
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
    assert "submitted job array" in runner("--seeds", "2", "--no-wait")
    out = runner("--seeds", "2", "--no-wait")
    assert "2 runs are still queued or running" in out and "submit" not in out
    for _ in range(60):
        if "all runs recorded" in runner("--collect"):
            break
        time.sleep(1)
    episodes_csv, commands_csv = common.suite_csvs(tmp_path / "results", "smoke")
    keys = {(row["algo"], row["seed"]) for row in common.read_csv(episodes_csv)}
    assert keys == {("pg", "1"), ("pg", "2"), ("ppo_clip", "1"), ("ppo_clip", "2")}
    assert len(common.read_csv(commands_csv)) == 4
    out = runner()
    assert "4 already recorded" in out and "submit" not in out
