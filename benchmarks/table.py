"""Prints benchmarks/results.csv as the Markdown tables in README.md: per env and budget, one row per script, with
each seed's figure in seed order."""

import csv
import sys
from collections import defaultdict
from pathlib import Path

ORDER = ["pg", "npg", "trpo", "ppo_clip", "ppo_kl"]
path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results.csv"
groups = defaultdict(list)
with open(path) as f:
    for row in csv.DictReader(f):
        groups[(row["env_id"], int(row["total_timesteps"]))].append(row)

for (env_id, total), group in groups.items():
    solving = bool(group[0]["solve_at"])
    print(f"\n{env_id}, {total:,} steps:\n")
    columns = ["script", "seeds", "final mean of the last 20 episodes"]
    columns += ["steps to a mean ≥ 475", "seconds to it"] if solving else []
    columns += ["mean KL per update", "largest KL"]
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for script in sorted({r["script"] for r in group}, key=ORDER.index):
        runs = sorted((r for r in group if r["script"] == script), key=lambda r: int(r["seed"]))
        cells = [f"`{script}`", ", ".join(r["seed"] for r in runs)]
        keys = ["final_mean20"] + (["solved_step", "solved_seconds"] if solving else [])
        cells += [" / ".join(r[k] or "never" for r in runs) for k in keys]
        cells += [
            " / ".join(f"{float(r['kl_mean']):.4f}" for r in runs),
            f"{max(float(r['kl_max']) for r in runs):.6f}",
        ]
        print("| " + " | ".join(cells) + " |")
