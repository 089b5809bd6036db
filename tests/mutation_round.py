"""A mutation tool's round over the method part of the five scripts: mutmut, in a copy of the repository.

    python tests/mutation_round.py                      # 6 mutants of update and 6 of main per script, seed 40
    python tests/mutation_round.py --per-script 0       # every mutant of update and main: about 2,200
    python tests/mutation_round.py --functions update compute_gae make_batch --per-script 10

tests/mutants.py plants the bugs a person wrote; this lets mutmut write them (operators, constants, arguments dropped),
one function of one script at a time. The method part is what lies above each script's fence (`# ---- Plumbing`):
in the copy, a `# pragma: no mutate` block covers everything from the fence down, and the fast tests of the method
(tests/test_math.py, test_method.py, test_wiring.py and test_resume.py) judge each mutant, mutmut choosing the ones
that call its function. It runs under `nice -n 15`, each mutant with a CPU-time limit of 3 × 2 × (its tests' time +
30 s): a killed mutant stops at its first failing test, a survivor runs them all. The repository itself is never
written: the copy is --folder, made anew from a commit (--rev, HEAD by default). Not part of CI. In the folder,
`mutmut results` lists the survivors and `mutmut show NAME` shows one's change; a survivor may still fall to the rest
of the fast suite (the plumbing's and the envs' tests), which the round leaves out to stay short.
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["pg", "npg", "trpo", "ppo_clip", "ppo_kl"]
SUITE = ["tests/test_math.py", "tests/test_method.py", "tests/test_wiring.py", "tests/test_resume.py"]
FENCE, MAIN = "\n# ---- Plumbing", '\nif __name__ == "__main__":'
CONFIG = f"""
[tool.mutmut]
source_paths = {json.dumps([f"{name}.py" for name in SCRIPTS])}
also_copy = ["benchmarks"]
pytest_add_cli_args_test_selection = {json.dumps([*SUITE, "-m", "not slow"])}
pytest_add_cli_args = ["-p", "no:cacheprovider"]
process_isolation = "forkserver"
timeout_multiplier = 3.0
timeout_constant = 30.0
"""


def prepare(folder: Path, rev: str) -> None:
    """The repository's files at the commit rev written to folder, the plumbing fenced off from mutmut."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    for name in SCRIPTS:
        path = folder / f"{name}.py"
        text = path.read_text()
        fence, main = text.index(FENCE), text.index(MAIN)
        path.write_text(
            text[:fence] + "\n# pragma: no mutate start" + text[fence:main] + "\n# pragma: no mutate end" + text[main:]
        )
    with open(folder / "pyproject.toml", "a") as pyproject:
        pyproject.write(CONFIG)


def mutmut(folder: Path, names: list[str], max_children: int) -> None:
    command = ["nice", "-n", "15", sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    subprocess.run(command, cwd=folder, check=False)


def sample(folder: Path, functions: list[str], per_script: int, seed: int) -> list[str]:
    """per_script mutants of each function of each script, drawn with seed (0: all of them)."""
    names = []
    for name in SCRIPTS:
        generated = sorted(json.loads((folder / "mutants" / f"{name}.py.meta").read_text())["exit_code_by_key"])
        rng = random.Random(seed)
        for function in functions:
            mangled = "x" + "".join(f"ǁ{part}" for part in function.split(".")) if "." in function else f"x_{function}"
            of_function = [key for key in generated if key.startswith(f"{name}.{mangled}__mutmut_")]
            names += rng.sample(of_function, min(per_script, len(of_function))) if per_script else of_function
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/mutation-round"), help="the copy, made anew")
    parser.add_argument("--functions", nargs="+", default=["update", "main"], help="functions, or Class.method")
    parser.add_argument("--per-script", type=int, default=6, help="mutants of each function in each script; 0: all")
    parser.add_argument("--seed", type=int, default=40)
    parser.add_argument("--rev", default="HEAD", help="the commit whose scripts and tests the round takes")
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args()
    if args.folder.resolve() == ROOT or ROOT in args.folder.resolve().parents:
        raise SystemExit("--folder must lie outside the repository: mutmut writes its mutants there")
    prepare(args.folder, args.rev)
    mutmut(args.folder, ["pg.x_compute_gae__mutmut_1"], args.max_children)  # generates every mutant, and the stats
    mutmut(args.folder, sample(args.folder, args.functions, args.per_script, args.seed), args.max_children)
    subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=args.folder, check=False)


if __name__ == "__main__":
    main()
