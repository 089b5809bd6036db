"""Turns benchmarks/results/*.csv into benchmarks/report/: report.md (the full report), one PNG of learning curves per
suite and env and one of each script against its peer per suite, and with --readme README.md's blocks between their
markers (BLOCKS: the results at a glance, and what an Atari run costs), so that README's numbers always come from here.

    python benchmarks/report.py             # benchmarks/report/report.md and the PNGs (needs matplotlib)
    python benchmarks/report.py --readme    # the same, and README.md's blocks

The numbers are deterministic: the same CSVs give the same text, byte for byte (tests/test_harness_report.py checks
README's blocks against it). Two scores, each a mean ± sample std (ddof 1) over the seeds, (n) the number of seeds:
the training score is CleanRL's, each seed's mean return over its last 100 episodes; the evaluation score is each
seed's mean return over the episodes of the deterministic evaluation that ended the run. Each of our scripts is set
against its peer (PEERS in peers.py); of a peer with two variants on an env, against the one with the higher
training score. Each comparison carries a 95% bootstrap interval over seeds (scipy.stats.bootstrap, each side's seeds
resampled on their own, a fixed seed, so the text repeats) and a verdict from it: ahead, tied or behind.
"""

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tyro
from common import REPORT, RESULTS, ROOT, SCRIPTS, SUITES, read_csv, speed_markdown, suite_csvs
from peers import PEERS

SOLVED, SOLVED_WINDOW = 475.0, 20  # CartPole-v1 counts as solved once the mean of the last 20 episodes is ≥ 475
GRID = 50  # learning curves: each seed's returns are averaged in this many equal bins of env steps
ROWS = (*SCRIPTS, *PEERS)  # the order of the rows of every table and of the curves: ours, then the peers

SCORES = """Each table gives two scores, each a mean ± sample std over seeds, (n) the number of seeds. **Training**: \
the mean return of each seed's last 100 training episodes. **Evaluation**: the mean return of each seed's 10 episodes \
of the deterministic policy (the Gaussian's mean, or the argmax) at the end of the run, normalisation statistics \
frozen, on a separate env seeded with the run's seed. Each script is set against its peer in `benchmarks/peers.py`: \
`pg` against `sb3-a2c`, `npg` and `trpo` against `sb3-trpo`, `ppo_clip` and `ppo_kl` against `sb3-ppo`, at rl-zoo's \
settings; where the peer also ran at its library's defaults (`-defaults`), against the variant with the higher \
training score, named in the table. *Ours vs peer* is the ratio of the means, ours / peer (1.10×: ours is 10% higher), \
where every seed's score on both sides is positive; where one is ≤ 0, as on Acrobot and Pendulum, a ratio reads \
backwards, and where a seed scored 0 (a Breakout evaluation that never served), a resample could divide by 0, so it \
is the difference ours − peer (+20.0: ours is 20 higher). In brackets, its 95% bootstrap interval over seeds \
(Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the Statistical Precipice": 10,000 percentile \
resamples, each side's seeds resampled on their own), and the verdict it gives: **ahead** where the whole interval \
is above 1× (or 0), **behind** where it is below, **tied** where it holds 1× (or 0); with one seed on a side there is \
no interval. With 3 to 5 seeds a side the intervals are wide, and a tie says the seeds cannot tell the two apart, not \
that they are equal. A score not measured shows as –.
"""

ANCHORS = """Published figures at 1M steps, for orientation only: env versions, seeds and metrics differ from ours.

| | Hopper | HalfCheetah | source and metric |
|---|---|---|---|
| Tianshou A2C / NPG / TRPO / PPO | 1253 / 1915 / 2046 / 2609 | 1830 / 3485 / 4471 / 5784 | Tianshou MuJoCo benchmark, v3 envs, 10 seeds, best point of the mean test curve within 1M |
| CleanRL `ppo_continuous_action` | 2383 ± 272 | 1443 ± 46 | CleanRL docs, v4 envs, 3 seeds, last 100 training episodes |
| sb3-contrib TRPO | 3372 ± 215 | 1803 ± 46 | sb3-contrib docs, v3 envs, 3 seeds |
| rl-zoo PPO / TRPO | 2410 / 3618 | 5819 / 1785 | rl-baselines3-zoo benchmark.md, v3 envs, 1 seed, deterministic evaluation |

On Atari, at 250k agent steps (1M frames), the same caveat: the games differ in version, and the scores in what an \
episode is.

| | Breakout | Seaquest | source and metric |
|---|---|---|---|
| OpenAI Baselines ppo2 / trpo_mpi | 6.7 / 3.1 | 342 / 223 (first 100k-step bin), 740 / 487 (500k) | Baselines' Atari benchmark (benchmarks_atari10M.htm in the openai/baselines repository), read off its plots: v4 envs without sticky actions, a lost life ends the episode, 6 runs |
| random play | 1.7 | 68.4 | Mnih et al. 2015 (Nature DQN)'s random agent: ALE without sticky actions, up to 30 no-op starts |
"""  # noqa: E501


@dataclass
class Options:
    results_dir: Path = RESULTS
    """where the suites' CSVs are"""
    out_dir: Path = REPORT
    """where report.md and the PNGs go"""
    readme: bool = False
    """also rewrite README.md's blocks between their markers (BLOCKS)"""
    readme_path: Path = ROOT / "README.md"


class Results(NamedTuple):
    runs: dict[tuple, list[dict]]
    """(algo, env_id, seed) → the run's training episodes, in step order"""
    evals: dict[tuple, list[dict]]
    """(algo, env_id, seed) → the episodes of the run's evaluation"""
    random: dict[str, list[float]]
    """env_id → the returns of a random policy's episodes there (random_policy.py), where measured"""


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
        random = defaultdict(list)
        for row in read_csv(results_dir / f"{suite}.random.csv"):
            random[row["env_id"]].append(float(row["episodic_return"]))
        if runs:
            runs = {key: sorted(rows, key=lambda row: int(row["global_step"])) for key, rows in runs.items()}
            suites[suite] = Results(runs, dict(evals), dict(random))
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
    if len(seeds) < 2:
        return f"{seeds[0]:.1f} (1)" if seeds else "–"
    return f"{np.mean(seeds):.1f} ± {np.std(seeds, ddof=1):.1f} ({len(seeds)})"


class Comparison(NamedTuple):
    ratio: bool
    """whether point and interval are ratios of means (every seed on both sides positive), else differences"""
    point: float
    low: float
    high: float
    verdict: str
    """ahead, tied or behind: where the interval lies against 1 (a ratio) or 0 (a difference); "one seed" where a
    side has a single seed, and so no interval"""


def compare(ours: list[float], peer: list[float]) -> Comparison | None:
    """Ours against the peer: the ratio of the means where every seed of both is positive, so that every resample's
    ratio is defined and positive, else their difference (see SCORES), with its 95% percentile bootstrap interval,
    each side's seeds resampled on their own, and the verdict."""
    from scipy.stats import bootstrap

    if not ours or not peer:
        return None
    ratio = min(ours) > 0 and min(peer) > 0

    def statistic(a, b, axis=-1):
        return a.mean(axis) / b.mean(axis) if ratio else a.mean(axis) - b.mean(axis)

    point = statistic(np.array(ours), np.array(peer))
    if min(len(ours), len(peer)) < 2:  # one seed on a side: no spread to resample, so no interval and no verdict
        return Comparison(ratio, float(point), np.nan, np.nan, "one seed")
    samples = tuple(np.array(x, dtype=float) for x in (ours, peer))
    res = bootstrap(samples, statistic, n_resamples=10_000, method="percentile", rng=np.random.default_rng(0))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    reference = 1.0 if ratio else 0.0
    verdict = "ahead" if low > reference else "behind" if high < reference else "tied"
    return Comparison(ratio, float(point), low, high, verdict)


def versus(ours: list[float], peer: list[float]) -> str:
    """The comparison's cell: point [low, high] verdict, e.g. 1.10× [1.02, 1.19] ahead, or +20.0 [−5.1, 41.3] tied."""
    return cell(c) if (c := compare(ours, peer)) else "–"


def cell(c: Comparison) -> str:
    if np.isnan(c.low):
        return f"{c.point:.2f}× (one seed)" if c.ratio else f"{c.point:+.1f} (one seed)"
    # a verdict's bound shows as many digits as it takes to differ from 1× (or 0): 1.002× ahead, not 1.00× ahead
    digits, reference = (2, 1.0) if c.ratio else (1, 0.0)
    bound = c.low if c.verdict == "ahead" else c.high
    while c.verdict != "tied" and round(bound, digits) == reference and digits < 6:
        digits += 1
    if c.ratio:
        return f"{c.point:.{digits}f}× [{c.low:.{digits}f}, {c.high:.{digits}f}] {c.verdict}"
    return f"{c.point:+.{digits}f} [{c.low:+.{digits}f}, {c.high:+.{digits}f}] {c.verdict}"


def compared_peer(results: Results, algo: str, env_id: str) -> str | None:
    """The variant of the script's peer with the higher mean training score on env_id; None where none has run."""
    variants = [name for name, peer in PEERS.items() if algo in peer.ours and seeds_of(results.runs, name, env_id)]
    return max(variants, key=lambda name: np.mean(scores(results, name, env_id)[0]), default=None)


def comparisons(suite: str, results: Results) -> list[tuple[str, str, str, str, Comparison]]:
    """(env_id, script, peer, metric, comparison) for every script that has a peer on an env of the suite, in table
    order, for both metrics."""
    found = []
    for env_id in ordered(results.runs, suite)[1]:
        for algo in (algo for algo in SCRIPTS if seeds_of(results.runs, algo, env_id)):
            if not (peer := compared_peer(results, algo, env_id)):
                continue
            for metric, ours, theirs in zip(("training", "evaluation"), scores(results, algo, env_id),
                                            scores(results, peer, env_id), strict=True):  # fmt: skip
                if c := compare(ours, theirs):
                    found.append((env_id, algo, peer, metric, c))
    return found


def verdict_table(suites: dict[str, Results]) -> str:
    """How many comparisons of each suite and metric came out ahead, tied and behind."""
    lines = ["| suite | metric | ahead | tied | behind |", "|---|---|---|---|---|"]
    for suite, results in suites.items():
        found = comparisons(suite, results)
        for metric in ("training", "evaluation"):
            verdicts = [c.verdict for _, _, _, m, c in found if m == metric]
            counts = " | ".join(str(verdicts.count(v)) for v in ("ahead", "tied", "behind"))
            lines.append(f"| `{suite}` | {metric} | {counts} |")
    return "\n".join(lines) + "\n"


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
    if random := results.random.get(env_id):
        score = f"{np.mean(random):.1f} ± {np.std(random, ddof=1):.1f} over {len(random)} episodes"
        lines += ["", f"A uniformly random policy on the same env: {score} (`benchmarks/random_policy.py`)."]
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
    if suites:
        parts.append(
            "The verdicts, counted over every script against its peer on every env of a suite (a side with one "
            "seed gives no verdict, and is not counted):\n"
        )
        parts.append(verdict_table(suites))
    for suite, results in suites.items():
        runs = results.runs
        envs = ordered(runs, suite)[1]
        parts += [env_table(suite, results, env_id) for env_id in envs]
        images = " ".join(f"![{suite}: {env}]({link_prefix}{curve_file(suite, env)})" for env in envs)
        parts.append(f"Learning curves (mean over seeds, band: min to max; dashed: the peers):\n\n{images}\n")
        if comparisons(suite, results):
            image = f"![{suite}: ours vs peer]({link_prefix}{suite}-versus-peers.png)"
            parts.append(f"Each script against its peer, with the 95% intervals of the tables:\n\n{image}\n")
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


def plot_comparisons(suite: str, results: Results, out_dir: Path) -> None:
    """One PNG per suite, a panel per env: each script's ratio to its peer (or difference), on both metrics, with its
    95% bootstrap interval, and the line at which the two are level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    found = comparisons(suite, results)
    if not found:
        return
    panels = list(dict.fromkeys((env_id, c.ratio) for env_id, *_, c in found))  # an env with ratios and differences: 2
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (env_id, ratio) in zip(axes[0], panels, strict=True):
        rows = [(algo, peer, metric, c) for e, algo, peer, metric, c in found if e == env_id and c.ratio == ratio]
        algos = list(dict.fromkeys(algo for algo, *_ in rows))
        for algo, _, metric, c in rows:
            y = algos.index(algo) + (0.15 if metric == "training" else -0.15)
            color = "tab:blue" if metric == "training" else "tab:orange"
            ax.errorbar(c.point, y, xerr=[[c.point - c.low], [c.high - c.point]], fmt="o", color=color, capsize=3,
                        label=metric if algos.index(algo) == 0 else None)  # fmt: skip
        ax.axvline(1.0 if ratio else 0.0, color="grey", lw=1)
        ax.set_yticks(range(len(algos)), [f"{a} vs {next(p for b, p, *_ in rows if b == a)}" for a in algos])
        ax.set(title=env_id, xlabel="ours / peer (log scale)" if ratio else "ours − peer")
        if ratio:  # 2× and 0.5× lie as far from 1× on either side
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.invert_yaxis()  # the tables' order, top to bottom
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"suite {suite}: each script against its peer, 95% bootstrap intervals over seeds", fontsize="medium")
    fig.tight_layout()
    fig.savefig(out_dir / f"{suite}-versus-peers.png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def glance(results_dir: Path, link_prefix: str) -> str:
    """README's results at a glance: the verdict counts, each script against its peer on the training score on every
    env where it has one, and per suite the plot of the comparisons; the rest is in report.md."""
    suites = load(results_dir)
    if not suites:
        return "No suite has been run yet: `python benchmarks/run.py --suite classic`.\n"
    found = {suite: comparisons(suite, results) for suite, results in suites.items()}
    lines = [
        "| suite | env | " + " | ".join(f"`{algo}`" for algo in SCRIPTS) + " |",
        "|---|---|" + "---|" * len(SCRIPTS),
    ]
    for suite, results in suites.items():
        training = {(env_id, algo): c for env_id, algo, _, metric, c in found[suite] if metric == "training"}
        for env_id in ordered(results.runs, suite)[1]:
            if any(env == env_id for env, _ in training):
                cells = [cell(training[env_id, algo]) if (env_id, algo) in training else "–" for algo in SCRIPTS]
                lines.append(f"| `{suite}` | {env_id} | " + " | ".join(cells) + " |")
    images = " ".join(f"![{suite}: ours vs peer]({link_prefix}{suite}-versus-peers.png)" for suite in suites
                      if found[suite])  # fmt: skip
    return "\n".join(
        [
            "How many comparisons of a script with its peer came out ahead, tied or behind, on the training score (the "
            "mean return of each seed's last 100 training episodes) and on the evaluation score (10 episodes of the "
            "deterministic policy at the end of each run); a verdict comes from the 95% bootstrap interval over seeds, "
            "and a side with one seed gives none:\n",
            verdict_table(suites),
            "Each script's training score against its peer's on every env where both ran: ours / peer (or ours − peer "
            "where a score is ≤ 0), its interval and its verdict. The peers are SB3's A2C for `pg`, sb3-contrib's TRPO "
            "for `npg` and `trpo`, SB3's PPO for `ppo_clip` and `ppo_kl`, each at rl-zoo's settings or its library's "
            "defaults, whichever scored higher:\n",
            "\n".join(lines) + "\n",
            f"Both scores, with their intervals (training in blue, evaluation in orange):\n\n{images}\n",
        ]
    )


def atari_cost(results_dir: Path) -> str:
    """README's sentence on what an Atari run costs: ppo_clip's speed on the game speed.py measured, from speed.csv."""
    row = next((r for r in read_csv(results_dir / "speed.csv") if r["name"] == "ppo_clip" and r["env_id"] in
                SUITES["atari"].envs), None)  # fmt: skip
    if not row:
        return "The speed of an Atari run has not been measured yet: `python benchmarks/speed.py`.\n"
    steps, sps = SUITES["atari"].envs[row["env_id"]], float(row["sps"])
    return (
        f"At these settings ppo_clip trains on {row['env_id']} at {sps:,.0f} env steps per second on one CPU thread "
        f"({row['cpu']}), so a run of {steps:,} steps takes about {steps / sps / 60:.0f} minutes, its evaluation "
        "aside; the [full report](benchmarks/report/report.md) has every script's speed.\n"
    )


# README's blocks, each between <!-- name:start --> and <!-- name:end -->, and what writes it.
BLOCKS = {"report": lambda results_dir: glance(results_dir, "benchmarks/report/"), "atari-cost": atari_cost}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_block(readme: str, name: str, block: str) -> str:
    """README's text with the part between the markers of block name replaced by block."""
    start, end = markers(name)
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}{end}{tail}"


def readme_block(readme: str, name: str) -> str:
    start, end = markers(name)
    return readme.split(start, 1)[1].split(end, 1)[0].removeprefix("\n")


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
            plot_comparisons(suite, results, options.out_dir)
    print(f"wrote {options.out_dir}")
    if options.readme:
        text = options.readme_path.read_text()
        for name, write in BLOCKS.items():
            text = replace_block(text, name, write(options.results_dir))
        options.readme_path.write_text(text)
        print(f"rewrote the blocks of {options.readme_path}: {', '.join(BLOCKS)}")


if __name__ == "__main__":
    main(tyro.cli(Options))
