"""Turns benchmarks/results/*.csv into benchmarks/report/: report.md, one PNG of learning curves per suite and env, and
with --readme the block of README.md between the report markers, so that README's numbers always come from here.

    python benchmarks/report.py             # benchmarks/report/report.md and the PNGs (needs matplotlib)
    python benchmarks/report.py --readme    # the same, and README.md's block

The numbers are deterministic: the same CSVs give the same text, byte for byte (tests/test_benchmarks.py checks
README's block against it). Two scores, each a mean ± std (numpy's, ddof 0) over the seeds, (n) the number of seeds:
the training score is CleanRL's, each seed's mean return over its last 100 episodes; the evaluation score is each
seed's mean return over the episodes of the deterministic evaluation that ended the run. Each of our scripts is set
against its peer (PEERS in peers.py); of a peer with two variants on an env, against the one with the higher
training score.
"""

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tyro
from common import REPORT, RESULTS, ROOT, SCRIPTS, SUITES, read_csv, speed_markdown, suite_csvs
from peers import PEERS

START, END = "<!-- report:start -->", "<!-- report:end -->"
SOLVED, SOLVED_WINDOW = 475.0, 20  # CartPole-v1 counts as solved once the mean of the last 20 episodes is ≥ 475
GRID = 50  # learning curves: each seed's returns are averaged in this many equal bins of env steps
ROWS = (*SCRIPTS, *PEERS)  # the order of the rows of every table and of the curves: ours, then the peers

SCORES = """Each table gives two scores, each a mean ± std over seeds, (n) the number of seeds. **Training**: the mean \
return of each seed's last 100 training episodes. **Evaluation**: the mean return of each seed's 10 episodes of the \
deterministic policy (the Gaussian's mean, or the argmax) at the end of the run, normalisation statistics frozen, on a \
separate env seeded with the run's seed. Each script is set against its peer in `benchmarks/peers.py`: `pg` against \
`sb3-a2c`, `npg` and `trpo` against `sb3-trpo`, `ppo_clip` and `ppo_kl` against `sb3-ppo`, at rl-zoo's settings; \
where the peer also ran at its library's defaults (`-defaults`), against the variant with the higher training score, \
named in the table. *Ours vs peer* is the ratio of the means, ours / peer (1.10×: ours is 10% higher), where both \
are positive; where either is ≤ 0, as on Acrobot and Pendulum, a ratio reads backwards, so it is the difference \
ours − peer (+20.0: ours is 20 higher). A score not measured shows as –.
"""

ANCHORS = """Published figures at 1M steps, for orientation only: env versions, seeds and metrics differ from ours.

| | Hopper | HalfCheetah | source and metric |
|---|---|---|---|
| Tianshou A2C / NPG / TRPO / PPO | 1253 / 1915 / 2046 / 2609 | 1830 / 3485 / 4471 / 5784 | Tianshou MuJoCo benchmark, v3 envs, 10 seeds, best point of the mean test curve within 1M |
| CleanRL `ppo_continuous_action` | 2383 ± 272 | 1443 ± 46 | CleanRL docs, v4 envs, 3 seeds, last 100 training episodes |
| sb3-contrib TRPO | 3372 ± 215 | 1803 ± 46 | sb3-contrib docs, v3 envs, 3 seeds |
| rl-zoo PPO / TRPO | 2410 / 3618 | 5819 / 1785 | rl-baselines3-zoo benchmark.md, v3 envs, 1 seed, deterministic evaluation |
"""  # noqa: E501


@dataclass
class Options:
    results_dir: Path = RESULTS
    """where the suites' CSVs are"""
    out_dir: Path = REPORT
    """where report.md and the PNGs go"""
    readme: bool = False
    """also rewrite README.md's block between the report markers"""
    readme_path: Path = ROOT / "README.md"


class Results(NamedTuple):
    runs: dict[tuple, list[dict]]
    """(algo, env_id, seed) → the run's training episodes, in step order"""
    evals: dict[tuple, list[dict]]
    """(algo, env_id, seed) → the episodes of the run's evaluation"""


def load(results_dir: Path) -> dict[str, Results]:
    """The Results of each reported suite with results, in SUITES order. Only runs in <suite>.commands.csv count: the
    runner writes a run's row there after all its episodes and its evaluation."""
    suites = {}
    for suite in (name for name, spec in SUITES.items() if spec.in_report):
        episodes_csv, commands_csv, eval_csv = suite_csvs(results_dir, suite)
        recorded = {(row["algo"], row["env_id"], row["seed"]) for row in read_csv(commands_csv)}
        runs, evals = defaultdict(list), defaultdict(list)
        for path, rows in ((episodes_csv, runs), (eval_csv, evals)):
            for row in read_csv(path):
                if (row["algo"], row["env_id"], row["seed"]) in recorded:
                    rows[row["algo"], row["env_id"], int(row["seed"])].append(row)
        if runs:
            runs = {key: sorted(rows, key=lambda row: int(row["global_step"])) for key, rows in runs.items()}
            suites[suite] = Results(runs, dict(evals))
    return suites


def ordered(runs: dict, suite: str) -> tuple[list[str], list[str]]:
    """The rows (scripts, then peers) and env ids present in runs, in the order of ROWS and of the suite."""
    algos = [algo for algo in ROWS if any(key[0] == algo for key in runs)]
    envs = [env for env in SUITES[suite].envs if any(key[1] == env for key in runs)]
    return algos, envs


def seeds_of(runs: dict, algo: str, env_id: str) -> list[list[dict]]:
    return [runs[key] for key in sorted(runs) if key[:2] == (algo, env_id)]


def returns(episodes: list[dict]) -> np.ndarray:
    return np.array([float(row["episodic_return"]) for row in episodes])


def scores(results: Results, algo: str, env_id: str) -> tuple[list[float], list[float]]:
    """Each seed's training score (the mean of its last 100 episodes), and each seed's evaluation score."""
    training = [returns(episodes)[-100:].mean() for episodes in seeds_of(results.runs, algo, env_id)]
    evaluation = [returns(episodes).mean() for episodes in seeds_of(results.evals, algo, env_id)]
    return training, evaluation


def summary(seeds: list[float]) -> str:
    return f"{np.mean(seeds):.1f} ± {np.std(seeds):.1f} ({len(seeds)})" if seeds else "–"


def versus(ours: list[float], peer: list[float]) -> str:
    """Ours against the peer: the ratio of the means where both are positive, else their difference (see SCORES)."""
    if not ours or not peer:
        return "–"
    a, b = np.mean(ours), np.mean(peer)
    return f"{a / b:.2f}×" if a > 0 and b > 0 else f"{a - b:+.1f}"


def compared_peer(results: Results, algo: str, env_id: str) -> str | None:
    """The variant of the script's peer with the higher mean training score on env_id; None where none has run."""
    variants = [name for name, peer in PEERS.items() if algo in peer.ours and seeds_of(results.runs, name, env_id)]
    return max(variants, key=lambda name: np.mean(scores(results, name, env_id)[0]), default=None)


def env_table(suite: str, results: Results, env_id: str) -> str:
    """Each script's and each peer's two scores on env_id, and each script's against its peer's."""
    lines = [
        f"Suite `{suite}`, {env_id} ({SUITES[suite].envs[env_id]:,} steps):",
        "",
        "| script or peer | training | evaluation | peer | training, ours vs peer | evaluation, ours vs peer |",
        "|---|---|---|---|---|---|",
    ]
    for algo in (algo for algo in ROWS if seeds_of(results.runs, algo, env_id)):
        training, evaluation = scores(results, algo, env_id)
        cells = [f"`{algo}`", summary(training), summary(evaluation)]
        if algo in SCRIPTS:
            peer = compared_peer(results, algo, env_id)
            peer_training, peer_evaluation = scores(results, peer, env_id) if peer else ([], [])
            cells += [
                f"`{peer}`" if peer else "–",
                versus(training, peer_training),
                versus(evaluation, peer_evaluation),
            ]
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def solved_at(episodes: list[dict]) -> dict | None:
    """The first episode at which the mean of the last 20 episodes reached 475, or None."""
    values = returns(episodes)
    means = np.convolve(values, np.ones(SOLVED_WINDOW) / SOLVED_WINDOW, mode="valid")  # means[i]: episodes i … i+19
    hits = np.flatnonzero(means >= SOLVED)
    return episodes[hits[0] + SOLVED_WINDOW - 1] if len(hits) else None


def solved_table(runs: dict, suite: str) -> str:
    lines = [
        "| script or peer | seeds that reached it | env steps to it | seconds to it |",
        "|---|---|---|---|",
    ]
    for algo in ordered(runs, suite)[0]:
        if not (hits := [solved_at(episodes) for episodes in seeds_of(runs, algo, "CartPole-v1")]):
            continue
        reached = [hit for hit in hits if hit is not None]
        steps = f"{np.mean([int(hit['global_step']) for hit in reached]):,.0f}" if reached else "–"
        seconds = f"{np.mean([float(hit['wall_seconds']) for hit in reached]):.1f}" if reached else "–"
        lines.append(f"| `{algo}` | {len(reached)}/{len(hits)} | {steps} | {seconds} |")
    return "\n".join(lines) + "\n"


def curve_file(suite: str, env_id: str) -> str:
    return f"{suite}-{env_id.replace('/', '-')}.png"


def render(results_dir: Path, link_prefix: str) -> str:
    """The report's Markdown; links to the PNGs start with link_prefix. Reads only the CSVs, so it needs no
    matplotlib and gives the same text wherever it runs."""
    suites, parts = load(results_dir), []
    parts.append(SCORES if suites else "No suite has been run yet: `python benchmarks/run.py --suite classic`.\n")
    for suite, results in suites.items():
        runs = results.runs
        envs = ordered(runs, suite)[1]
        parts += [env_table(suite, results, env_id) for env_id in envs]
        images = " ".join(f"![{suite}: {env}]({link_prefix}{curve_file(suite, env)})" for env in envs)
        parts.append(f"Learning curves (mean over seeds, band: min to max; dashed: the peers):\n\n{images}\n")
        if "CartPole-v1" in envs:
            parts.append(
                f"Suite `{suite}`, CartPole-v1: when the mean of the last {SOLVED_WINDOW} episodes first reached "
                f"{SOLVED:.0f}, as a mean over the seeds that reached it. Seconds count from the process start, "
                "with other runs sharing the machine, so they are indicative only.\n"
            )
            parts.append(solved_table(runs, suite))
    parts.append(ANCHORS)
    speed = read_csv(results_dir / "speed.csv")
    parts.append("Speed, in env steps per second (SPS):\n" if speed else "The speed table has not been measured yet.\n")
    if speed:
        parts.append(speed_markdown(speed))
    return "\n".join(parts)


def binned_curve(episodes: list[dict], edges: np.ndarray) -> np.ndarray:
    """The mean return of the episodes that ended in each bin of env steps; an empty bin repeats the previous bin,
    and bins before the first episode are NaN."""
    steps, values = np.array([int(row["global_step"]) for row in episodes]), returns(episodes)
    index = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, len(edges) - 2)
    curve = np.full(len(edges) - 1, np.nan)
    for b in range(len(curve)):
        inside = values[index == b]
        curve[b] = inside.mean() if len(inside) else curve[b - 1] if b else np.nan
    return curve


def plot(suite: str, runs: dict, out_dir: Path) -> None:
    """One PNG per env: each script's and each peer's (dashed) mean over seeds of the binned return, and the min–max
    band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos, envs = ordered(runs, suite)
    for env_id in envs:
        edges = np.linspace(0, SUITES[suite].envs[env_id], GRID + 1)
        x = (edges[:-1] + edges[1:]) / 2
        fig, ax = plt.subplots(figsize=(6, 4))
        for algo in algos:
            curves = np.array([binned_curve(episodes, edges) for episodes in seeds_of(runs, algo, env_id)])
            if not len(curves):
                continue
            seen = ~np.isnan(curves).all(axis=0)  # drops the bins before any seed's first episode
            xs, curves = x[seen], curves[:, seen]
            style = "-" if algo in SCRIPTS else "--"
            line = ax.plot(xs, np.nanmean(curves, axis=0), style, label=f"{algo} ({len(curves)} seeds)")[0]
            ax.fill_between(xs, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=line.get_color(), alpha=0.2)
        ax.set(
            title=f"{env_id} (suite {suite}); band: min–max over seeds", xlabel="env steps", ylabel="episodic return"
        )
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / curve_file(suite, env_id), dpi=100, metadata={"Software": None})
        plt.close(fig)


def replace_block(readme: str, block: str) -> str:
    """README's text with the part between the report markers replaced by block."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}{END}{tail}"


def readme_block(readme: str) -> str:
    return readme.split(START, 1)[1].split(END, 1)[0].removeprefix("\n")


def main(options: Options) -> None:
    options.out_dir.mkdir(parents=True, exist_ok=True)
    (options.out_dir / "report.md").write_text("# Benchmark report\n\n" + render(options.results_dir, ""))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is missing, so no learning curves: pip install -r benchmarks/requirements.txt")
    else:
        for suite, results in load(options.results_dir).items():
            plot(suite, results.runs, options.out_dir)
    print(f"wrote {options.out_dir}")
    if options.readme:
        text = options.readme_path.read_text()
        options.readme_path.write_text(replace_block(text, render(options.results_dir, "benchmarks/report/")))
        print(f"rewrote the report block of {options.readme_path}")


if __name__ == "__main__":
    main(tyro.cli(Options))
