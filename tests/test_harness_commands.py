"""The benchmark harness's commands: each reproduces its run through the script's or the peer's CLI, and the suites
and hyperparameter tables build the commands they should."""

import dataclasses
import importlib
import importlib.util
import inspect
import json
import shlex
import typing

import pytest
import tyro
from conftest import common, peers, report, run


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


def test_the_atari_suite_runs_five_seeds_of_ppo_clip_and_sb3_ppo_three_of_trpo_and_one_of_the_others():
    runs = common.suite_runs("atari", peers=True)
    seeds = {algo: sorted({r.seed for r in runs if r.algo == algo}) for algo in {r.algo for r in runs}}
    assert seeds == {
        "ppo_clip": [1, 2, 3, 4, 5],
        "trpo": [1, 2, 3],
        "sb3-ppo": [1, 2, 3, 4, 5],
        "pg": [1],
        "npg": [1],
        "ppo_kl": [1],
    }
    assert {r.env_id for r in runs} == {"ALE/Seaquest-v5", "ALE/Breakout-v5"}


def test_the_gym_mujoco_suite_runs_eight_seeds_of_ppo_clip_and_sb3_ppo_on_swimmer_and_five_elsewhere():
    runs = common.suite_runs("gym-mujoco", peers=True)
    seeds = {
        (r.algo, r.env_id): sorted({x.seed for x in runs if (x.algo, x.env_id) == (r.algo, r.env_id)}) for r in runs
    }
    for row in ("ppo_clip", "sb3-ppo-defaults"):
        assert seeds[row, "Swimmer-v5"] == [1, 2, 3, 4, 5, 6, 7, 8]
        assert seeds[row, "Hopper-v5"] == [1, 2, 3, 4, 5]
    assert seeds["trpo", "Swimmer-v5"] == seeds["sb3-trpo-defaults", "Swimmer-v5"] == [1, 2, 3, 4, 5]
    assert seeds["npg", "Swimmer-v5"] == [1]
    chosen = common.suite_runs("gym-mujoco", scripts=["ppo_clip"], envs=["Swimmer-v5"], seeds=[4, 8])
    assert [r.seed for r in chosen] == [4, 8]
    assert common.suite_runs("gym-mujoco", scripts=["trpo"], seeds=[6]) == []


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
        seeds = sum(
            len(spec.seeds_at.get((a, e), spec.seeds_of.get(a, spec.seeds))) for a in spec.scripts for e in spec.envs
        )
        assert len(runs) == seeds
        for r in common.suite_runs(suite, peers=True):
            argv = common.build_command(r, hyperparams)
            assert argv[argv.index("--total-timesteps") + 1] == str(spec.envs[r.env_id])
            assert argv[argv.index("--eval-episodes") + 1] == "10"
            assert ("--save-model" in argv) == (r.algo in common.SCRIPTS)  # a peer always saves and evaluates


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


def test_the_gym_mujoco_suite_runs_the_nine_tasks_at_the_defaults_beside_the_libraries_defaults(tmp_path):
    runs = common.suite_runs("gym-mujoco", peers=True)
    assert {r.env_id for r in runs} == set(peers.MUJOCO) and len(peers.MUJOCO) == 9
    seeds = {
        algo: sorted({r.seed for r in runs if r.algo == algo and r.env_id != "Swimmer-v5"})
        for algo in {r.algo for r in runs}
    }
    assert seeds == {"trpo": [1, 2, 3, 4, 5], "ppo_clip": [1, 2, 3, 4, 5], "pg": [1], "npg": [1, 2, 3], "ppo_kl": [1],
                     "sb3-a2c": [1, 2, 3], "sb3-trpo-defaults": [1, 2, 3, 4, 5],
                     "sb3-ppo-defaults": [1, 2, 3, 4, 5]}  # fmt: skip
    npg_seeds = {(r.env_id, r.seed) for r in runs if r.algo == "npg" and r.seed != 1}
    assert npg_seeds == {("InvertedPendulum-v5", 2), ("InvertedPendulum-v5", 3)}  # npg's one task at 3 seeds
    assert {r.total_timesteps for r in runs} == {1_000_000}
    path = tmp_path / "hyperparams.toml"  # a per-env table changes the mujoco suite's command, not this suite's
    path.write_text('[trpo."Hopper-v5"]\ntarget_kl = 0.03\n')
    tables = common.load_hyperparams(path)
    (tuned,) = common.suite_runs("mujoco", scripts=["trpo"], envs=["Hopper-v5"], seeds=[1])
    (plain,) = common.suite_runs("gym-mujoco", scripts=["trpo"], envs=["Hopper-v5"], seeds=[1])
    assert common.build_command(tuned, tables) != common.build_command(tuned, {})
    assert common.build_command(plain, tables) == common.build_command(plain, {})
    assert common.build_command(plain, {})[2:] == common.command_argv("trpo", common.run_args(plain, {}))[2:]
    defaults = common.load_script("trpo").Args(env_id="Hopper-v5", seed=1, total_timesteps=1_000_000,
                                               **common.HARNESS_FLAGS)  # fmt: skip
    assert common.run_args(plain, tables) == defaults
