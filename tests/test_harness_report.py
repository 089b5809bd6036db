"""The benchmark report: deterministic, CleanRL's score, each script set against the stronger variant of its peer, a
bootstrap interval and verdict per comparison, README's block recomputed from the committed CSVs, and one folder and
plot per ALE id."""

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, common, report, unavailable


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
        ([2.0, 3.0, 2.5], [4.0, 3.0, 0.0], "tied"),  # a seed scored 0: the difference, +0.17; a ratio's resample ÷ 0
    ],
)
def test_a_comparison_s_verdict_follows_its_bootstrap_interval(ours, peer, expected):
    """The interval holds the point and is finite, it is a ratio where every seed of both sides is positive and a
    difference where not, and the verdict says on which side of 1 (or 0) it lies; it repeats exactly (a fixed seed)."""
    c = report.compare(ours, peer)
    assert c.verdict == expected and c.low <= c.point <= c.high and np.isfinite([c.low, c.high]).all()
    assert c.ratio == (min(ours + peer) > 0)
    assert report.compare(ours, peer) == c
    cell = report.versus(ours, peer)
    assert cell.endswith(expected) and ("×" in cell) == c.ratio


def test_a_verdict_shows_the_digits_that_set_its_bound_apart_from_1x_or_0():
    ahead = report.Comparison(True, 1.0005, 1.0003, 1.0008, "ahead")
    assert report.cell(ahead) == "1.0005× [1.0003, 1.0008] ahead"
    assert report.cell(report.Comparison(False, 0.5, 0.04, 0.9, "ahead")) == "+0.50 [+0.04, +0.90] ahead"
    assert report.cell(report.Comparison(False, -0.5, -0.9, -0.04, "behind")) == "-0.50 [-0.90, -0.04] behind"
    assert report.cell(report.Comparison(True, 1.001, 0.998, 1.004, "tied")) == "1.00× [1.00, 1.00] tied"
    assert report.cell(report.Comparison(True, 1.10, 1.02, 1.19, "ahead")) == "1.10× [1.02, 1.19] ahead"


def test_one_seed_on_a_side_gives_no_interval_and_no_verdict():
    c = report.compare([120.0], [100.0, 101.0])
    assert c.verdict == "one seed" and c.low != c.low  # NaN
    assert report.versus([120.0], [100.0, 101.0]) == "1.19× (one seed)"


def test_readme_block_is_the_report_of_the_committed_csvs():
    """README's numbers come from report.py: after a change to the CSVs, `python benchmarks/report.py --readme`. Its
    blocks hold the verdicts and the comparisons of the full report, and the speed table's ppo_clip row on Atari."""
    readme = (ROOT / "README.md").read_text()
    for name, write in report.BLOCKS.items():
        assert report.readme_block(readme, name) == write(common.RESULTS), f"README's {name} block"
        assert report.replace_block(readme, name, report.readme_block(readme, name)) == readme


def test_readme_s_glance_is_the_full_report_s_training_comparisons_and_its_atari_cost_the_speed_table_s(tmp_path):
    """The glance has one row per env where a script met its peer, each script's training cell as its env's table in
    the full report gives it ("–" where it has no peer), and each suite's comparison plot; an env where no script met
    a peer has no row. The Atari cost is the atari suite's steps at ppo_clip's SPS on its game."""
    training = [row for seed, score in ((1, 300.0), (2, 320.0)) for row in episodes("ppo_clip", "Hopper-v5", seed,
                [score] * 100)]  # fmt: skip
    training += [row for seed, score in ((1, 100.0), (2, 110.0)) for row in episodes("sb3-ppo", "Hopper-v5", seed,
                 [score] * 100)]  # fmt: skip
    training += episodes("trpo", "Hopper-v5", 1, [50.0]) + episodes("sb3-a2c", "HalfCheetah-v5", 1, [10.0])
    write_results(tmp_path, "mujoco", training)
    glance, full = report.glance(tmp_path, "x/"), report.render(tmp_path, "x/")
    ppo_clip = report.versus([300.0, 320.0], [100.0, 110.0])
    assert ppo_clip.startswith("2.95× [") and f"| `ppo_clip` | 310.0 ± 14.1 (2) | – | `sb3-ppo` | {ppo_clip} |" in full
    assert f"| `mujoco` | Hopper-v5 | – | – | – | {ppo_clip} | – |" in glance and "HalfCheetah-v5" not in glance
    assert (
        "| `mujoco` | training | 1 | 0 | 0 |" in glance
        and "![mujoco: ours vs peer](x/mujoco-versus-peers.png)" in glance
    )
    assert "not been measured" in report.atari_cost(tmp_path)
    common.write_csv(tmp_path / "speed.csv", common.SPEED_COLUMNS, [
        dict(name="ppo_clip", env_id="CartPole-v1", sps=9000, cpu="A CPU"),
        dict(name="pg", env_id="ALE/Breakout-v5", sps=100, cpu="A CPU"),
        dict(name="ppo_clip", env_id="ALE/Breakout-v5", sps=500, cpu="A CPU"),
    ])  # fmt: skip
    cost = report.atari_cost(tmp_path)
    assert "ALE/Breakout-v5 at 500 env steps per second on one CPU thread (A CPU)" in cost
    assert "250,000 steps takes about 8 minutes" in cost  # 500 s


def test_an_ale_id_names_one_folder_and_one_plot():
    """An ALE/ id's / would make a folder inside a folder: runs and plots name it with a - instead."""
    run = common.Run("atari", "ppo_clip", "ALE/Pong-v5", 1, 1000)
    assert run.folder(Path("work")) == Path("work/atari/ALE-Pong-v5__ppo_clip__1")
    assert report.curve_file("atari", "ALE/Pong-v5") == "atari-ALE-Pong-v5.png"


def test_a_random_policy_s_score_goes_under_its_env_s_table(tmp_path):
    """random_policy.py plays the suite's envs as the scripts make them (CartPole: a return of 1 a step), and the
    report gives each env's mean and sample std under its table; an env it did not play gets no line."""
    random_policy = importlib.import_module("random_policy")
    random_policy.main(random_policy.Options(suite="classic", episodes=3, results_dir=tmp_path))
    rows = [row for row in common.read_csv(tmp_path / "classic.random.csv") if row["env_id"] == "CartPole-v1"]
    returns = [float(row["episodic_return"]) for row in rows]
    assert [int(row["episode"]) for row in rows] == [1, 2, 3] and len(set(returns)) > 1
    assert returns == [float(row["episodic_length"]) for row in rows]
    synthetic_results(tmp_path)
    text = report.render(tmp_path, "")
    line = f"A uniformly random policy on the same env: {np.mean(returns):.1f} ± {np.std(returns, ddof=1):.1f} over 3"
    cartpole = text[text.index("Suite `classic`, CartPole-v1") : text.index("Suite `classic`, Pendulum-v1")]
    assert line in cartpole and text.count("A uniformly random policy") == 2  # CartPole and Pendulum; Acrobot unrun


def test_speed_merge_replaces_the_measured_rows_and_keeps_the_rest():
    speed = importlib.import_module("speed")
    old = [dict(name=n, env_id=e, sps=s) for n, e, s in [("pg", "CartPole-v1", "1"), ("pg", "ALE/Breakout-v5", "2"),
                                                          ("npg", "ALE/Breakout-v5", "3")]]  # fmt: skip
    new = [dict(name="npg", env_id="ALE/Breakout-v5", sps="30"), dict(name="trpo", env_id="ALE/Breakout-v5", sps="40")]
    rows = speed.merged(old, new)
    assert [(r["name"], r["env_id"], r["sps"]) for r in rows] == [
        ("pg", "CartPole-v1", "1"),
        ("pg", "ALE/Breakout-v5", "2"),
        ("npg", "ALE/Breakout-v5", "30"),
        ("trpo", "ALE/Breakout-v5", "40"),
    ]
    assert speed.merged(old, []) == old and speed.merged([], new) == new
