"""The documentation's commands work: README's are the ones CI runs, and every command README.md and the harness's
manual show parses through the command line of the file it runs (a script's Args, a tool's Options), without training;
benchmarks/run.py's lines also build their runs (--dry-run). Their links lead to files, and README names no commit."""

import argparse
import dataclasses
import importlib.util
import re
import runpy
import shlex
import signal
import sys
from pathlib import Path

import pytest
import tyro
from conftest import ROOT, common, run

DOCS = ("README.md", "benchmarks/README.md")
REDIRECTIONS = (">", ">>", "2>&1", "&")


def commands(text: str) -> list[list[str]]:
    """Each command of the text's ```bash blocks and `python …` code spans, as argv: a line ending in \\ goes on, #
    starts a comment, && separates two commands, nohup and VAR=value before one are dropped, a redirection ends it."""
    lines = [
        line
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    lines += re.findall(r"(?<!`)`((?:\w+=\S+ )*python3? [^`]+)`", text)
    found = []
    for line in lines:
        words = shlex.split(line, comments=True)
        while words:
            argv, words = (words[: words.index("&&")], words[words.index("&&") + 1 :]) if "&&" in words else (words, [])
            while argv and (argv[0] == "nohup" or re.fullmatch(r"\w+=\S*", argv[0])):
                argv = argv[1:]
            ends = [i for i, word in enumerate(argv) if word in REDIRECTIONS]
            found.append(argv[: ends[0]] if ends else argv)
    return found


COMMANDS = {shlex.join(argv): argv for doc in DOCS for argv in commands((ROOT / doc).read_text())}


def requirements() -> set[str]:
    """The names of the packages the requirements files ask for."""
    files = ("requirements.txt", "requirements-dev.txt", "benchmarks/requirements.txt")
    lines = [line.strip() for name in files for line in (ROOT / name).read_text().splitlines()]
    return {re.split(r"[<>=!~\[ ]", line)[0].lower() for line in lines if line and not line.startswith(("#", "-r"))}


class Parsed(Exception):
    """What a file's command line parsed to, raised to stop the file before it runs."""


def parse(path: Path, argv: list[str], monkeypatch):
    """What `python path *argv` parses its command line to, through the file's own tyro or argparse CLI: the file runs
    as __main__ until it parses its arguments, and stops there."""
    cli, parse_args = tyro.cli, argparse.ArgumentParser.parse_args

    def stop_at_cli(f, *args, **kwargs):
        raise Parsed(cli(f, *args, **{**kwargs, "args": argv}))

    def stop_at_parse_args(self, args=None, namespace=None):
        raise Parsed(parse_args(self, argv, namespace))

    with monkeypatch.context() as m:
        m.setattr(tyro, "cli", stop_at_cli)
        m.setattr(argparse.ArgumentParser, "parse_args", stop_at_parse_args)
        m.setattr(signal, "signal", lambda *_: None)  # run.py's SIGTERM handler is not this process's
        m.setattr(sys, "argv", [str(path), *argv])
        try:
            runpy.run_path(str(path), run_name="__main__")
        except Parsed as parsed:
            return parsed.args[0]
        except SystemExit as e:
            if e.code == 0 and "--help" in argv:
                return None
            pytest.fail(f"python {path.relative_to(ROOT)} {shlex.join(argv)}: its command line stops it, code {e.code}")
    pytest.fail(f"{path} ran to its end without parsing a command line")


def check_python_file(argv: list[str], monkeypatch):
    """A file of the repository, its arguments parsed by its own CLI; benchmarks/run.py's also build their runs. A file
    that reads sys.argv itself (fingerprint.py) is not run: each flag the command gives must be a string in its text."""
    path = ROOT / argv[0]
    assert path.is_file(), f"{argv[0]} is not a file of the repository"
    text = path.read_text()
    if "tyro.cli(" not in text and "parse_args(" not in text:
        for flag in (word for word in argv[1:] if word.startswith("-")):
            assert f'"{flag}"' in text, f"{argv[0]} does not read {flag}"
        return
    parsed = parse(path, argv[1:], monkeypatch)
    if argv[0] == "benchmarks/run.py" and parsed is not None:
        assert run.main(dataclasses.replace(parsed, dry_run=True)) == 0


@pytest.mark.parametrize("command", COMMANDS, ids=list(COMMANDS))
def test_every_command_of_the_docs_works(command, monkeypatch, capsys, pytestconfig):
    argv = COMMANDS[command]
    match argv:
        case ["python3", "-m", "venv", ".venv"] | [".", ".venv/bin/activate"]:
            pass
        case ["pip", "install", *packages]:
            files = [packages[i + 1] for i, word in enumerate(packages) if word == "-r"]
            assert all((ROOT / name).is_file() for name in files), files
            names = [word for word in packages if not word.startswith("-") and word not in files]
            assert {re.split(r"[<>=!~\[]", name)[0].lower() for name in names} <= requirements(), names
        case ["python", "-m", "pytest", *options]:
            declared = {marker.split(":")[0] for marker in pytestconfig.getini("markers")}
            expressions = [options[i + 1] for i, word in enumerate(options) if word == "-m"]
            named = {word for e in expressions for word in re.findall(r"\w+", e)} - {"and", "or", "not"}
            assert named <= declared and importlib.util.find_spec("xdist"), options
        case ["tensorboard", "--logdir", _]:
            assert "tensorboard" in requirements() and importlib.util.find_spec("tensorboard")
        case ["python", _, *_]:
            check_python_file(argv[1:], monkeypatch)
        case _:
            pytest.fail(f"no check for the command {command}: add one here")


def test_readme_s_atari_command_is_the_atari_suite_s_run():
    """README's Atari command is ppo_clip's run in the atari suite, so the settings and the cost it quotes are its."""
    (argv,) = [
        argv for argv in COMMANDS.values() if argv[:2] == ["python", "ppo_clip.py"] and "ALE/Breakout-v5" in argv
    ]
    suite = common.run_args(common.Run("atari", "ppo_clip", "ALE/Breakout-v5", 1, 250_000), common.load_hyperparams())
    assert tyro.cli(type(suite), args=argv[2:]) == suite


def test_the_manual_gives_the_columns_of_every_csv_the_harness_writes():
    manual = (ROOT / "benchmarks" / "README.md").read_text()
    for columns in (*common.SUITE_COLUMNS, common.RANDOM_COLUMNS, common.SPEED_COLUMNS):
        assert f"`{','.join(columns)}`" in manual, columns


@pytest.mark.parametrize("doc", [*DOCS, "benchmarks/NOTES.md"])
def test_the_docs_links_lead_to_files(doc):
    text = (ROOT / doc).read_text()
    targets = [target for target in re.findall(r"\]\(([^)#]+)", text) if not target.startswith("https://")]
    missing = [target for target in targets if not ((ROOT / doc).parent / target).exists()]
    assert targets and not missing, missing


def test_readme_names_no_commit_and_no_issue():
    readme = (ROOT / "README.md").read_text()
    assert not re.findall(r"\b[0-9a-f]{7,40}\b", readme) and not re.findall(r"\bissue \d", readme, re.I)


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = ". .venv/bin/activate && pip install -r requirements-dev.txt && python -m pytest -q -n auto"
    assert f"```bash\n{test_command}\n```" in readme
    assert ci[-1] == test_command
    assert "export CI=true" in ci, "in CI a test that cannot run fails"
    setup = "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -r requirements.txt"
    setup += " && python pg.py"
    assert f"```bash\n{setup}\n```" in readme
