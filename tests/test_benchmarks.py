"""The benchmark harness: commands that reproduce their run, ours and the peers', resuming after a kill, the CSVs and
the evaluation at the end of each run, a deterministic report that README's numbers come from, and the Slurm backend
on a real single-node Slurm."""

import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import re
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
from conftest import unavailable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
common, peers, report, run = (importlib.import_module(name) for name in ("common", "peers", "report", "run"))


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


def test_the_atari_suite_runs_three_seeds_of_ppo_clip_trpo_and_sb3_ppo_and_one_of_the_others():
    runs = common.suite_runs("atari", peers=True)
    seeds = {algo: sorted({r.seed for r in runs if r.algo == algo}) for algo in {r.algo for r in runs}}
    assert seeds == {
        "ppo_clip": [1, 2, 3],
        "trpo": [1, 2, 3],
        "sb3-ppo": [1, 2, 3],
        "pg": [1],
        "npg": [1],
        "ppo_kl": [1],
    }
    assert {r.env_id for r in runs} == {"ALE/Seaquest-v5", "ALE/Breakout-v5"}


def test_a_pattern_table_applies_to_every_env_it_matches_under_the_env_s_own(tmp_path):
    path = tmp_path / "hyperparams.toml"
    path.write_text('[trpo."ALE/*"]\ntarget_kl = 0.001\nvf_iters = 3\n[trpo."ALE/Pong-v5"]\nvf_iters = 1\n')
    hyperparams = common.load_hyperparams(path)
    assert common.overrides_for(hyperparams, "trpo", "ALE/Pong-v5") == {"target_kl": 0.001, "vf_iters": 1}
    assert common.overrides_for(hyperparams, "trpo", "ALE/Breakout-v5") == {"target_kl": 0.001, "vf_iters": 3}
    assert common.overrides_for(hyperparams, "trpo", "Hopper-v5") == {}


def test_every_suite_builds_with_the_committed_hyperparams():
    hyperparams = common.load_hyperparams()
    for suite, spec in common.SUITES.items():
        runs = common.suite_runs(suite)
        seeds = sum(len(spec.seeds_of.get(algo, spec.seeds)) for algo in spec.scripts)
        assert len(runs) == seeds * len(spec.envs)
        for r in common.suite_runs(suite, peers=True):
            argv = common.build_command(r, hyperparams)
            assert argv[argv.index("--total-timesteps") + 1] == str(spec.envs[r.env_id])
            assert argv[argv.index("--eval-episodes") + 1] == "10"
            assert ("--save-model" in argv) == (r.algo in common.SCRIPTS)  # a peer always saves and evaluates


@pytest.mark.parametrize("peer,env_id", [(name, env) for name, peer in peers.PEERS.items() for env in peer.settings])
def test_peer_commands_round_trip_through_the_peer_cli(peer, env_id):
    """The runner's command for a peer parses back, through peers.py's own CLI, to the run with its settings; and
    every setting is a parameter of the peer's algorithm (a misspelt one would only fail in the run)."""
    r = common.Run("mujoco", peer, env_id, 3, 12_345)
    argv = shlex.split(shlex.join(common.build_command(r, {})))
    assert argv[:2] == ["python", "benchmarks/peers.py"]
    options = tyro.cli(peers.Options, args=argv[2:])
    assert (options.peer, options.env_id, options.seed, options.total_timesteps) == (peer, env_id, 3, 12_345)
    assert json.loads(options.settings) == peers.PEERS[peer].settings[env_id]
    module, name = peers.PEERS[peer].algorithm.rsplit(".", 1)
    kwargs = peers.algorithm_kwargs(json.loads(options.settings))
    assert set(kwargs) <= set(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    assert not any(isinstance(value, str) for value in kwargs.values())  # lin_x became a schedule


def test_peers_and_peer_names_select_the_peer_rows(capsys):
    def rows(suite, **selection):
        return sorted({r.algo for r in common.suite_runs(suite, **selection)}, key=report.ROWS.index)

    ours = list(common.SCRIPTS)
    assert rows("mujoco") == ours and rows("classic") == ours
    variants = ["sb3-a2c", "sb3-trpo", "sb3-trpo-defaults", "sb3-ppo", "sb3-ppo-defaults"]
    assert rows("mujoco", peers=True) == ours + variants
    assert rows("classic", peers=True) == ours + ["sb3-a2c", "sb3-trpo", "sb3-ppo"]  # rl-zoo's settings only
    assert rows("mujoco", scripts=["sb3-ppo"]) == ["sb3-ppo"]
    assert rows("mujoco", scripts=["ppo_clip"], peers=True) == ["ppo_clip", "sb3-ppo", "sb3-ppo-defaults"]
    assert rows("smoke", peers=True) == ["pg", "ppo_clip", "sb3-a2c", "sb3-ppo"]
    assert len(common.suite_runs("mujoco", peers=True)) == (5 + 5) * 2 * 5
    for suite, unknown in (("classic", "sb3-ppo-defaults"), ("mujoco", "sb3-dqn")):
        with pytest.raises(SystemExit, match="has no script or peer"):
            common.suite_runs(suite, scripts=[unknown])
    assert run.main(run.Options(suite="mujoco", scripts=("sb3-trpo",), seeds=(1,), dry_run=True)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("python benchmarks/peers.py --peer sb3-trpo ") for line in lines)


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
    bad_tables = ("no_such_flag = 1", "seed = 3", "save_model = false")
    for bad in [f'[ppo_clip."CartPole-v1"]\n{line}\n' for line in bad_tables] + ["[nope.x]\n", "[sb3-ppo.x]\n"]:
        path.write_text(bad)
        with pytest.raises(SystemExit):
            common.load_hyperparams(path)
    path.write_text('[ppo_clip."CartPole-v1"]\nnum_steps = "many"\n')
    with pytest.raises(SystemExit):
        common.build_command(tuned, common.load_hyperparams(path))


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
def test_runner_resumes_a_killed_run_from_its_checkpoint(tmp_path, capsys, monkeypatch):
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


def episodes(algo: str, env_id: str, seed: int, values) -> list[dict]:
    """Rows of <suite>.csv: one episode of each return in values, the i-th at step 10·i and second i/10."""
    return [dict(algo=algo, env_id=env_id, seed=seed, global_step=10 * i, episodic_return=value, episodic_length=10,
                 wall_seconds=i / 10) for i, value in enumerate(values, 1)]  # fmt: skip


def evaluation(algo: str, env_id: str, seed: int, value: float) -> list[dict]:
    """Rows of <suite>.eval.csv: 10 evaluation episodes, each returning value."""
    return [dict(algo=algo, env_id=env_id, seed=seed, episode=i, episodic_return=value, episodic_length=10)
            for i in range(1, 11)]  # fmt: skip


def write_results(results_dir: Path, suite: str, training: list[dict], evaluations=(), unfinished=()) -> None:
    """The suite's three CSVs: every run of training and evaluations is finished (has a command row) except the
    runs of unfinished, whose episodes are there but which have no command row, so they do not count."""
    runs = {(row["algo"], row["env_id"], row["seed"]): None for row in [*training, *evaluations]}
    commands = [dict(zip(("algo", "env_id", "seed"), key, strict=True)) for key in runs]
    rows = ([*training, *unfinished], commands, list(evaluations))
    for path, columns, content in zip(common.suite_csvs(results_dir, suite), common.SUITE_COLUMNS, rows, strict=True):
        common.write_csv(path, columns, content)


def synthetic_results(results_dir: Path) -> None:
    """classic: pg's seed 1 scores 100 over its last 100 episodes and seed 2 scores 200; ppo_clip's seed 1 scores
    500 from its episode 111 on, so its 20-episode mean first reaches 475 at episode 129 (19 × 500 + 10), step 1290,
    second 12.9. No evaluation anywhere."""
    rows = [row for seed, score in ((1, 100.0), (2, 200.0))
            for row in episodes("pg", "CartPole-v1", seed, [0.0] * 49 + [score] * 101)]  # fmt: skip
    rows += episodes("ppo_clip", "CartPole-v1", 1, [10.0] * 110 + [500.0] * 40)
    rows += episodes("ppo_clip", "Pendulum-v1", 3, [-i for i in range(1, 11)])
    write_results(results_dir, "classic", rows, unfinished=episodes("trpo", "Pendulum-v1", 3, [-1.0]))


def needs_matplotlib():
    if not importlib.util.find_spec("matplotlib"):
        unavailable("matplotlib is not installed, so no plot is drawn: pip install -r benchmarks/requirements.txt")


def test_report_is_deterministic_and_computes_cleanrls_score(tmp_path):
    synthetic_results(tmp_path)
    text = report.render(tmp_path, "")
    assert "| `pg` | 150.0 ± 70.7 (2) | – | – | – | – |" in text  # no evaluation and no peer: –, not a crash
    assert "| `ppo_clip` | 206.0 (1) | – |" in text  # 40 episodes of 500, 60 of 10; one seed: no std
    assert "| `ppo_clip` | -5.5 (1) | – |" in text
    assert "| `pg` | 0/2 | – | – |" in text and "| `ppo_clip` | 1/1 | 1,290 | 12.9 |" in text
    assert "![classic: Pendulum-v1](classic-Pendulum-v1.png)" in text and "Tianshou" in text
    assert "| `trpo` |" not in text
    for out_dir in (tmp_path / "a", tmp_path / "b"):
        report.main(report.Options(results_dir=tmp_path, out_dir=out_dir))
        assert (out_dir / "report.md").read_text() == "# Benchmark report\n\n" + text
    needs_matplotlib()
    assert (tmp_path / "a" / "classic-CartPole-v1.png").stat().st_size > 0


def test_report_sets_each_script_against_the_stronger_variant_of_its_peer(tmp_path):
    """Both scores of ours and of the peers; ours / peer where both are positive, ours − peer where not; of two
    variants, the one with the higher training score is compared; what is missing shows as –."""
    training = episodes("ppo_clip", "Hopper-v5", 1, [300.0] * 100) + episodes("ppo_clip", "Hopper-v5", 2, [100.0])
    training += episodes("ppo_kl", "Hopper-v5", 1, [50.0]) + episodes("trpo", "Hopper-v5", 1, [10.0])
    training += episodes("sb3-ppo", "Hopper-v5", 1, [80.0]) + episodes("sb3-ppo-defaults", "Hopper-v5", 1, [100.0])
    evaluations = evaluation("ppo_clip", "Hopper-v5", 1, 400.0) + evaluation("ppo_clip", "Hopper-v5", 2, 200.0)
    evaluations += evaluation("sb3-ppo", "Hopper-v5", 1, 100.0) + evaluation("sb3-ppo-defaults", "Hopper-v5", 1, 150.0)
    write_results(tmp_path, "mujoco", training, evaluations)
    pendulum = episodes("trpo", "Pendulum-v1", 1, [-200.0]) + episodes("sb3-trpo", "Pendulum-v1", 1, [-300.0])
    write_results(tmp_path, "classic", pendulum, evaluation("trpo", "Pendulum-v1", 1, -150.0)
                  + evaluation("sb3-trpo", "Pendulum-v1", 1, -100.0))  # fmt: skip
    text = report.render(tmp_path, "")
    row = "| `ppo_clip` | 200.0 ± 141.4 (2) | 300.0 ± 141.4 (2) | `sb3-ppo-defaults` | 2.00× (one seed) | 2.00× "
    assert row + "(one seed) |" in text
    assert "| `ppo_kl` | 50.0 (1) | – | `sb3-ppo-defaults` | 0.50× (one seed) | – |" in text
    assert "| `trpo` | 10.0 (1) | – | – | – | – |" in text  # sb3-trpo has not run on Hopper-v5
    assert "| `sb3-ppo` | 80.0 (1) | 100.0 (1) |  |  |  |" in text
    assert "| `sb3-ppo-defaults` | 100.0 (1) | 150.0 (1) |  |  |  |" in text
    assert "| `trpo` | -200.0 (1) | -150.0 (1) | `sb3-trpo` | +100.0 (one seed) | -50.0 (one seed) |" in text
    needs_matplotlib()
    report.main(report.Options(results_dir=tmp_path, out_dir=tmp_path / "report"))
    assert (tmp_path / "report" / "mujoco-Hopper-v5.png").stat().st_size > 0


@pytest.mark.parametrize(
    "ours, peer, expected",
    [
        ([110.0, 112.0, 108.0, 111.0, 109.0], [100.0, 101.0, 99.0], "ahead"),  # 1.10×, seeds far apart
        ([90.0, 92.0, 88.0], [100.0, 101.0, 99.0], "behind"),
        ([100.0, 300.0, 200.0], [100.0, 300.0, 150.0], "tied"),  # 1.09×, within the seeds' spread
        ([500.0] * 5, [500.0] * 3, "tied"),  # all equal: the interval is [1, 1]
        ([-80.0, -82.0, -81.0], [-90.0, -91.0, -89.0], "ahead"),  # negative returns: the difference, +9.0
        ([-95.0, -96.0, -94.0], [-90.0, -91.0, -89.0], "behind"),
    ],
)
def test_a_comparison_s_verdict_follows_its_bootstrap_interval(ours, peer, expected):
    """The interval holds the point, it is a ratio where both means are positive and a difference where not, and the
    verdict says on which side of 1 (or 0) it lies; it repeats exactly (a fixed seed)."""
    c = report.compare(ours, peer)
    assert c.verdict == expected and c.low <= c.point <= c.high
    assert c.ratio == (min(ours + peer) > 0)
    assert report.compare(ours, peer) == c
    cell = report.versus(ours, peer)
    assert cell.endswith(expected) and ("×" in cell) == c.ratio


def test_one_seed_on_a_side_gives_no_interval_and_no_verdict():
    c = report.compare([120.0], [100.0, 101.0])
    assert c.verdict == "one seed" and c.low != c.low  # NaN
    assert report.versus([120.0], [100.0, 101.0]) == "1.19× (one seed)"


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


def test_an_ale_id_names_one_folder_and_one_plot():
    """An ALE/ id's / would make a folder inside a folder: runs and plots name it with a - instead."""
    run = common.Run("atari", "ppo_clip", "ALE/Pong-v5", 1, 1000)
    assert run.folder(Path("work")) == Path("work/atari/ALE-Pong-v5__ppo_clip__1")
    assert report.curve_file("atari", "ALE/Pong-v5") == "atari-ALE-Pong-v5.png"
