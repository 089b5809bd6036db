"""Prints benchmarks/results.csv as the Markdown tables in README.md: per script and env, each seed's figure."""

import csv
import sys
from collections import defaultdict
from pathlib import Path

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results.csv"
rows = defaultdict(list)
with open(path) as f:
    for row in csv.DictReader(f):
        rows[(row["env_id"], int(row["total_timesteps"]))].append(row)

for (env_id, total), group in rows.items():
    solving = bool(group[0]["solve_at"])
    print(f"\n{env_id}, {total:,} steps, seeds {', '.join(sorted({r['seed'] for r in group}))}:\n")
    head = "| script | final mean of last 20 episodes | " + (
        "steps to mean ≥ 475 | seconds to it | " if solving else ""
    )
    print(head + "mean KL per update | largest KL |")
    print("|---" * (head.count("|") + 1) + "|")
    for script in dict.fromkeys(r["script"] for r in group):
        mine = sorted((r for r in group if r["script"] == script), key=lambda r: int(r["seed"]))
        cells = [" / ".join(r[k] or "never" for r in mine) for k in ("final_mean20", "solved_step", "solved_seconds")]
        kl_mean = " / ".join(f"{float(r['kl_mean']):.4f}" for r in mine)
        kl_max = f"{max(float(r['kl_max']) for r in mine):.6f}"
        print(
            f"| `{script}` | {cells[0]} | "
            + (f"{cells[1]} | {cells[2]} | " if solving else "")
            + f"{kl_mean} | {kl_max} |"
        )
