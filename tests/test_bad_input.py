"""Bad input stops a script before anything runs, with one line and exit code 1, and leaves no run folder: arguments
out of range, envs and spaces the scripts do not support, missing devices and packages, and checkpoints that are
missing, broken, hostile, another script's, or not resumable."""

import contextlib
import functools
import importlib
import importlib.util
import math
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import SCRIPTS, UNSUPPORTED, command_line, tiny_args

import ppo_clip
import ppo_kl

# ---- Arguments and envs


BAD_ARGS = [
    (dict(env_id="NoSuchEnv-v0"), "--env-id NoSuchEnv-v0"),
    *[(dict(env_id=env_id), expected) for env_id, (_, expected) in UNSUPPORTED.items()],
    (dict(env_id="FrozenLake-v1"), "observation space Discrete(16)"),
    (dict(total_timesteps=0), "--total-timesteps"),
    (dict(num_envs=-1), "--num-envs"),
    (dict(num_steps=0), "--num-steps"),
    (dict(num_envs=1, num_steps=40, num_minibatches=41), "--num-minibatches"),
    (dict(num_envs=1, num_steps=40, num_minibatches=0), "--num-minibatches"),
    (dict(gamma=0.0), "--gamma"),
    (dict(gamma=1.01), "--gamma"),
    (dict(gae_lambda=-0.1), "--gae-lambda"),
    (dict(gae_lambda=1.5), "--gae-lambda"),
    (dict(device="tpu"), "--device"),
    (dict(eval_episodes=0), "--eval-episodes"),
    (dict(log_std_init=math.nan), "--log-std-init"),
    # moviepy is not installed here: the message names the flag, and gymnasium's says what to install
    (dict(capture_video=True), "with --capture-video: DependencyNotInstalled"),
]


@pytest.mark.parametrize("overrides, expected", BAD_ARGS)
def test_bad_input_is_refused_before_training(script, in_tmp, overrides, expected):
    args = script.Args(**overrides)
    assert expected in script.check_args(args)
    with pytest.raises(SystemExit) as exit_info:
        script.main(args)
    assert str(exit_info.value) == f"{script.__name__}: error: {script.check_args(args)}"
    assert not (in_tmp / "runs").exists()


RATES = ("learning_rate", "vf_learning_rate", "max_grad_norm", "cg_damping")


SCRIPT_RATES = [(s, r) for s in SCRIPTS for r in RATES if hasattr(importlib.import_module(s).Args, r)]


@pytest.mark.parametrize("name, rate", SCRIPT_RATES, ids=[f"{s}-{r}" for s, r in SCRIPT_RATES])
@pytest.mark.parametrize("value", [0.0, -0.5])
def test_non_positive_rates_are_refused(name, rate, value):
    script = importlib.import_module(name)
    assert f"--{rate.replace('_', '-')}" in script.check_args(script.Args(**{rate: value}))


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_unavailable_device_is_refused(script, device):
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    message = script.check_args(script.Args(device=device))
    assert (message is None) if available else (f"--device must be one of auto, cpu here, got {device}" == message)


def test_good_input_is_accepted(script):
    assert script.check_args(script.Args()) is None
    assert script.check_args(script.Args(env_id="Pendulum-v1", gamma=1.0, gae_lambda=0.0)) is None


@pytest.mark.parametrize("name", ["pg"])  # the entry point that prints check_args's message is the same in all five
@pytest.mark.parametrize("flags, expected", [(["--env-id", "Blackjack-v1", "--gamma", "1"], "Tuple")])
def test_cli_error_is_one_line_without_traceback(name, flags, expected, capsys):
    code = command_line(name, *flags)  # an exception other than SystemExit, a traceback, propagates and fails here
    assert isinstance(code, str) and "\n" not in code, "Python prints a str code as one line on stderr and exits with 1"
    assert code.startswith(f"{name}: error: ") and expected in code
    assert capsys.readouterr().err == "", "nothing else reaches stderr"


@pytest.mark.parametrize(
    "script, overrides, expected",
    [
        (ppo_clip, dict(clip_coef=0.0), "--clip-coef"),
        (ppo_clip, dict(target_kl=-0.1), "--target-kl"),
        (ppo_clip, dict(update_epochs=0), "--update-epochs"),
        (ppo_kl, dict(init_beta=0.0), "--init-beta"),
        (ppo_kl, dict(target_kl=0.0), "--target-kl"),
    ],
)
def test_bad_ppo_input_is_refused(script, overrides, expected):
    assert expected in script.check_args(script.Args(**overrides))


def test_norm_obs_on_images_is_refused(script):
    assert "--norm-obs is for flat observations" in script.check_args(script.Args(env_id="Pixel-v0", norm_obs=True))


# ---- Checkpoints: --eval-checkpoint and --resume


@functools.cache
def model_file(name: str) -> bytes:
    """The bytes of a tiny CartPole run's checkpoint, trained once per script and session."""
    script = importlib.import_module(name)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        script.main(tiny_args(script, total_timesteps=256, num_steps=64, save_model=True))
        (path,) = Path("runs").glob("*/*.model")
        return path.read_bytes()


class Payload:
    """Unpickling this would create the file `marker`: the code a hostile checkpoint runs."""

    def __reduce__(self):
        return (Path.touch, (Path("marker").absolute(),))


@pytest.mark.parametrize("how", ["missing", "truncated", "garbage", "pickled object", "foreign"])
def test_bad_checkpoint_gets_a_clear_error(script, in_tmp, how):
    data, path, bad = model_file(script.__name__), in_tmp / "good.model", in_tmp / "bad.model"
    path.write_bytes(data)
    if how == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        bad.write_bytes(bytes(range(256)) * 10)
    elif how == "pickled object":
        torch.save({**torch.load(path, weights_only=True), "extra": Payload()}, bad)
        assert not (in_tmp / "marker").exists()
    elif how == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(SystemExit) as exit_info:
        script.main(script.Args(eval_checkpoint=str(bad)))
    message = str(exit_info.value)
    assert message.startswith(f"{script.__name__}: error: --eval-checkpoint {bad}: ") and "\n" not in message
    assert not (in_tmp / "marker").exists(), "the checkpoint's code ran"


def test_pickled_object_is_refused_from_the_command_line(in_tmp, capsys):
    torch.save({"args": {}, "extra": Payload()}, "bad.model")
    code = command_line("pg", "--eval-checkpoint", "bad.model")
    assert isinstance(code, str) and "\n" not in code, "Python prints a str code as one line on stderr and exits with 1"
    assert code.startswith("pg: error: --eval-checkpoint bad.model: UnpicklingError")
    assert capsys.readouterr().err == ""
    assert not (in_tmp / "marker").exists() and pickle  # pickle: the module a plain torch.load would have used


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_checkpoint_from_another_script_names_the_script_that_saved_it(name, in_tmp):
    saver = SCRIPTS[(SCRIPTS.index(name) + 1) % len(SCRIPTS)]
    (in_tmp / "other.model").write_bytes(model_file(saver))
    script = __import__(name)
    with pytest.raises(SystemExit) as exit_info:
        script.main(script.Args(eval_checkpoint="other.model"))
    assert str(exit_info.value) == (
        f"{name}: error: --eval-checkpoint other.model: ValueError: it was saved by {saver}.py, not by {name}.py"
    )


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("trpo", ["--resume", "missing.model"], "--resume missing.model: FileNotFoundError"),
        ("trpo", ["--resume", "not-a-checkpoint.txt"], "--resume not-a-checkpoint.txt: "),
        ("pg", ["--resume", "trpo-run/trpo.model"], "it was saved by trpo.py, not by pg.py"),
        ("pg", ["--resume", "pg-run/pg.model"], "it holds no training state to resume (it was saved without --save"),
        ("trpo", ["--resume", "trpo-run/trpo.model", "--env-id", "Acrobot-v1"], "--env-id Acrobot-v1 contradicts"),
        ("trpo", ["--resume", "trpo-run/trpo.model", "--target-kl", "0.05"], "--target-kl 0.05 contradicts the run"),
        ("trpo", ["--resume", "trpo-run/trpo.model", "--save-every", "0"], "--save-every must be positive, got 0"),
    ],
)
def test_a_bad_resume_stops_with_one_line_and_no_run(saved, name, argv, message):
    Path("not-a-checkpoint.txt").write_text("hello")
    before = sorted(Path().rglob("*"))
    code = command_line(name, *argv)
    assert isinstance(code, str) and code.startswith(f"{name}: error: ") and message in code and "\n" not in code
    assert sorted(Path().rglob("*")) == before  # no run folder, no file touched
