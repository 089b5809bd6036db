"""README's commands are the ones CI runs."""

from conftest import ROOT


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
