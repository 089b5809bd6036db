"""One prepared run folder, run to the end: what each task of a Slurm job array executes (run.py --backend slurm).

    python benchmarks/task.py benchmarks/work/<suite>/<env>__<script>__<seed>

The local backend does the same from its own process (common.launch, then common.finish), so both leave the same
markers and run.py collects both the same way.
"""

import sys
from pathlib import Path

from common import finish, launch

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    process, start = launch(folder)
    finish(folder, process.wait(), start)
    sys.exit(process.returncode)
