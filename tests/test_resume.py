"""--save-every and --resume: a run stopped and resumed continues the run it was; a bad --resume stops with one line.

What the design allows: a resumed run restores the weights, every optimizer, the normaliser's statistics, β, the
iteration and the random states of torch and numpy, but it restarts its envs (an episode in progress is lost). So it
repeats the uninterrupted run bit for bit where the restart changes nothing: a deterministic env whose episodes all
end at the checkpoint's step. Steps-v0 is such an env; on any other, the resumed run is another draw of the same run."""

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import command_line, events, only_run, tiny_args


class StepsEnv(gym.Env):
    """obs = [t / 8], the same from every reset; 8 steps an episode, cut by the time limit. Discrete: reward 1 when the
    action is t's parity. Box: reward −(a − t/8)²."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float64)

    def __init__(self, continuous: bool = False):
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,)) if continuous else gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0]), {}

    def step(self, action):
        target = self.t / 8
        reward = -float((action[0] - target) ** 2) if self.action_space.shape else float(action == self.t % 2)
        self.t += 1
        return np.array([self.t / 8]), reward, False, False, {}


gym.register("Steps-v0", entry_point=StepsEnv, max_episode_steps=8)
gym.register("BoxSteps-v0", entry_point=StepsEnv, max_episode_steps=8, kwargs={"continuous": True})


N = 2  # --save-every; each run is 2N iterations of 2 envs × 16 steps, so every episode ends at an iteration's end


def run_args(script, env_id: str, **overrides):
    return tiny_args(script, env_id=env_id, num_steps=16, total_timesteps=2 * N * 32, save_every=N, **overrides)


def next_second() -> None:
    """Waits for the clock's next second. Tensorboard reads a run's event files in the order of their names, whose
    first field is the second each was opened; within one second it falls to the process id and a counter, compared
    as text, so that a file opened later by this process (…9 then …10) can be read first, and the resumed run's purge
    undone. A resumed run in practice is another process, started seconds later at least."""
    time.sleep(1.01 - time.time() % 1)


def interrupt_at(script, patch: pytest.MonkeyPatch, iteration: int) -> None:
    """A real SIGINT to this process when the run starts update number `iteration`, as Ctrl-C would send."""
    calls, update = [], script.update

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == iteration:
            os.kill(os.getpid(), signal.SIGINT)
        return update(*args, **kwargs)

    patch.setattr(script, "update", interrupted)


@pytest.mark.parametrize("env_id", ["Steps-v0", "BoxSteps-v0"], ids=["discrete", "box"])
def test_a_resumed_run_is_the_run_that_was_not_interrupted(script, env_id, in_tmp, monkeypatch, capsys, sigint_raises):
    """2N iterations straight against N, a SIGINT in iteration N + 1, and --resume: the same steps logged once each,
    the same learning rates, β, losses and returns, and at the end the same weights, normaliser statistics and
    optimizer states (Adam's step counts among them). On Box actions, observations are normalised and rewards scaled."""
    script.main(run_args(script, env_id))
    straight = only_run().rename("straight")
    with monkeypatch.context() as patch, pytest.raises(SystemExit) as stop:
        interrupt_at(script, patch, N + 1)
        script.main(run_args(script, env_id))
    assert stop.value.code == 130
    checkpoint = only_run() / f"{script.__name__}.model"
    assert (
        f"{script.__name__}: interrupted at step {32 * (N + 1)}; --resume {checkpoint} continues it\n"
        in capsys.readouterr().err
    )
    assert torch.load(checkpoint, weights_only=True)["progress"]["iteration"] == N
    next_second()
    script.main(script.Args(resume=str(checkpoint)))
    resumed = only_run()
    a, b = events(straight), events(resumed)
    assert a.keys() == b.keys() and "charts/SPS" in a
    for key in sorted(set(a) - {"charts/SPS"}):
        assert b[key] == a[key], key
    assert [step for step, _ in b["charts/SPS"]] == [32 * i for i in range(1, 2 * N + 1)]
    assert any(key in a for key in ("charts/learning_rate", "charts/beta", "charts/cg_residual"))
    final = [torch.load(run / f"{script.__name__}.model", weights_only=True) for run in (straight, resumed)]
    for part in ("agent", "normalizer"):
        torch.testing.assert_close(final[1][part], final[0][part], rtol=0, atol=0)
    torch.testing.assert_close(final[1]["progress"]["optimizers"], final[0]["progress"]["optimizers"], rtol=0, atol=0)
    assert final[1]["progress"]["iteration"] == 2 * N


def test_sigint_loses_at_most_save_every_iterations(in_tmp, monkeypatch, capsys, sigint_raises):
    """A SIGINT in iteration 8 of a run that saves every 3: exit code 130, a message that says how to resume, the
    checkpoint of iteration 6, and --resume goes on from iteration 7 to the end, in the same run folder."""
    import ppo_clip

    with monkeypatch.context() as patch, pytest.raises(SystemExit) as stop:
        interrupt_at(ppo_clip, patch, 8)
        ppo_clip.main(tiny_args(ppo_clip, env_id="Steps-v0", num_steps=16, total_timesteps=12 * 32, save_every=3))
    assert stop.value.code == 130
    run = only_run()
    assert f"--resume {run}/ppo_clip.model continues it" in capsys.readouterr().err
    assert torch.load(run / "ppo_clip.model", weights_only=True)["progress"]["iteration"] == 6
    next_second()
    assert command_line("ppo_clip", "--resume", str(run / "ppo_clip.model")) is None
    assert capsys.readouterr().out.splitlines()[0].startswith("step       224 |")  # iteration 7 of 12: 7 × 32 steps
    assert only_run() == run and [s for s, _ in events(run)["charts/SPS"]] == [32 * i for i in range(1, 13)]


def test_a_resumed_run_keeps_its_arguments_and_takes_the_flags_that_may_change(saved):
    """--resume with the saved arguments given again, and with a new --save-every and --device: it runs, and its
    arguments are the checkpoint's but for those two."""
    import trpo

    checkpoint = torch.load(saved["trpo"], weights_only=True)
    args, _ = trpo.resumed_args(trpo.Args(resume=str(saved["trpo"]), target_kl=checkpoint["args"]["target_kl"],
                                          save_every=5, device="cpu"))  # fmt: skip
    assert args.save_every == 5 and args.device == "cpu" and args.env_id == "Steps-v0" and args.num_steps == 16
    assert {k: v for k, v in vars(args).items() if k not in trpo.RESUME_MAY_CHANGE} == {
        k: v for k, v in checkpoint["args"].items() if k not in trpo.RESUME_MAY_CHANGE
    }


def test_a_run_that_save_every_does_not_divide_ends_with_its_last_iteration_saved(script, in_tmp, monkeypatch):
    """5 iterations of 2 envs × 16 steps (180 steps asked: the 20 left over make no sixth) with --save-every 2: the
    checkpoints of iterations 2, 4 and 5, and the one left on disk holds the fifth update's weights and the step 160,
    where tensorboard's last point is."""
    saved, after_update = [], []
    save_checkpoint, update = script.save_checkpoint, script.update

    def save_spy(agent, normalizer, args, path, progress=None):
        saved.append((progress["iteration"], progress["global_step"]))
        return save_checkpoint(agent, normalizer, args, path, progress)

    def update_spy(agent, *args, **kwargs):
        metrics = update(agent, *args, **kwargs)
        after_update.append({name: weight.clone() for name, weight in agent.state_dict().items()})
        return metrics

    monkeypatch.setattr(script, "save_checkpoint", save_spy)
    monkeypatch.setattr(script, "update", update_spy)
    script.main(tiny_args(script, env_id="Steps-v0", num_steps=16, total_timesteps=5 * 32 + 20, save_every=2))
    assert saved == [(2, 64), (4, 128), (5, 160)] and len(after_update) == 5
    checkpoint = torch.load(only_run() / f"{script.__name__}.model", weights_only=True)
    assert (checkpoint["progress"]["iteration"], checkpoint["progress"]["global_step"]) == (5, 160)
    torch.testing.assert_close(checkpoint["agent"], after_update[-1], rtol=0, atol=0)
    assert any(not torch.equal(after_update[-2][name], w) for name, w in after_update[-1].items()), "the 5th moved it"
    assert [step for step, _ in events(only_run())["charts/SPS"]] == [32, 64, 96, 128, 160]
