"""The wiring of main: what it passes between rollout, compute_gae and the update, and what one update does.

The math functions have their own tests; these catch a correct function called with the wrong inputs, or a loss with
the wrong sign. Each runs main for one or two small batches, watching it through spies on the module's own functions
(rollout, compute_gae, guarded_step), and judges the update by a known answer: the better arm of a bandit gains
probability, a surrogate that is 0 at θ_old becomes positive, a rejected step leaves θ_old bit for bit."""

import copy
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import test_probes  # noqa: F401  (registers the probe envs)
import torch
from conftest import read_scalars, tiny_args

import npg
import ppo_clip
import ppo_kl
import trpo


@dataclass
class Run:
    scalars: dict[str, list[float]]
    initial: torch.nn.Module  # the agent as the first rollout found it
    agent: torch.nn.Module  # the agent after the last update
    batches: list[tuple] = field(default_factory=list)  # what each rollout returned
    gae_calls: list[tuple] = field(default_factory=list)  # (rewards, values, next_values, dones, γ, λ, advantages)
    steps: int = 0  # calls of guarded_step


def train(script, monkeypatch, **overrides) -> Run:
    """One batch of 2 envs × 64 steps unless overrides say otherwise, with main watched through spies."""
    run = Run({}, None, None)
    rollout, compute_gae, guarded_step = script.rollout, script.compute_gae, script.guarded_step

    def rollout_spy(envs, agent, *args, **kwargs):
        if run.agent is None:
            run.initial, run.agent = copy.deepcopy(agent), agent
        run.batches.append(rollout(envs, agent, *args, **kwargs))
        return run.batches[-1]

    def compute_gae_spy(*args):
        advantages = compute_gae(*args)
        run.gae_calls.append((*args, advantages.clone()))
        return advantages

    def guarded_step_spy(*args, **kwargs):
        run.steps += 1
        return guarded_step(*args, **kwargs)

    existing = set(Path("runs").glob("*")) if Path("runs").exists() else set()
    with monkeypatch.context() as m:
        m.setattr(script, "rollout", rollout_spy)
        m.setattr(script, "compute_gae", compute_gae_spy)
        m.setattr(script, "guarded_step", guarded_step_spy)
        script.main(tiny_args(script, **{"total_timesteps": 128, **overrides}))
    (folder,) = set(Path("runs").glob("*")) - existing
    run.scalars = read_scalars(folder)
    return run


def test_gae_sees_the_true_successor_of_every_step(script, in_tmp, monkeypatch):
    """Counter-v0's obs is [episode id, step]; its episodes end by termination or by the 12-step time limit. main must
    hand compute_gae V(s') of the true successor s' (the final obs where an episode ended), 0 after a termination only,
    and the dones that stop Â at the end of each episode: there Â_t is its own TD error."""
    run = train(script, monkeypatch, env_id="Counter-v0", num_envs=3, num_steps=60, total_timesteps=180)
    data = run.batches[0]
    obs, true_next_obs, rewards, terminations, dones = (
        data.obs,
        data.next_obs,
        data.rewards,
        data.terminations,
        data.dones,
    )
    ((gae_rewards, values, next_values, gae_dones, gamma, _, advantages),) = run.gae_calls
    truncations = dones.bool() & ~terminations.bool()
    assert terminations.sum() >= 3 and truncations.sum() >= 3 and dones[:-1].sum() >= 6
    # The successor of each obs is the next step of the same episode, also where the env has already reset.
    torch.testing.assert_close(true_next_obs[..., 0], obs[..., 0], rtol=0, atol=0)
    torch.testing.assert_close(true_next_obs[..., 1], obs[..., 1] + 1, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(values, run.initial.value(obs))
        torch.testing.assert_close(next_values, torch.where(terminations.bool(), 0.0, run.initial.value(true_next_obs)))
    assert (next_values[truncations] != 0).all(), "a truncated episode is bootstrapped from V(final obs)"
    assert torch.equal(gae_rewards, rewards) and torch.equal(gae_dones, dones)
    done = dones.bool()
    td_errors = rewards + gamma * next_values - values
    torch.testing.assert_close(advantages[done], td_errors[done])  # nothing reaches back from the next episode


def test_zero_advantages_leave_the_critic_unchanged(script, in_tmp, monkeypatch):
    """With Â = 0 the critic's targets R̂ = Â + V are its own values, so its loss has a zero gradient."""
    monkeypatch.setattr(script, "compute_gae", lambda rewards, *_: torch.zeros_like(rewards))
    run = train(script, monkeypatch, env_id="ProbeObsReward-v0")
    with torch.no_grad():
        assert run.initial.value(torch.tensor([[1.0], [-1.0]])).abs().min() > 0.01  # a target of 0 would move it
    after = run.agent.critic.state_dict()
    for name, before in run.initial.critic.state_dict().items():
        assert torch.equal(before, after[name]), name


def test_one_update_makes_the_better_arm_likelier(script, in_tmp, monkeypatch):
    """ProbeBandit-v0 pays 1 for action 1 and 0 for action 0. The methods that ascend a surrogate L(θ) with L(θ_old) = 0
    (Â is normalised to mean 0, and r = 1 there) must also log a policy loss −L(θ) below 0 after the update."""
    run = train(script, monkeypatch, env_id="ProbeBandit-v0")
    with torch.no_grad():
        before, after = (agent.dist(torch.ones(1, 1)).probs[0, 1].item() for agent in (run.initial, run.agent))
    assert after > before
    assert run.scalars["losses/kl"][0] > 0
    if script.__name__ != "pg":
        assert run.scalars["losses/policy_loss"][0] < 0


def test_one_update_moves_the_gaussian_log_std(script, in_tmp, monkeypatch):
    """log σ is a parameter of the policy: every method must move it. On ProbeTarget-v0 too, the methods that ascend a
    surrogate must log a policy loss below its value of 0 at θ_old."""
    run = train(script, monkeypatch, env_id="ProbeTarget-v0")
    assert not torch.equal(run.agent.actor_logstd, run.initial.actor_logstd)
    if script.__name__ != "pg":
        assert run.scalars["losses/policy_loss"][0] < 0


@pytest.mark.parametrize("env_id", ["ProbeBandit-v0", "ProbeTarget-v0"])
@pytest.mark.parametrize("module", [npg, trpo], ids=["npg", "trpo"])
def test_natural_step_meets_the_trust_region(module, env_id, in_tmp, monkeypatch):
    """npg's step has ½·sᵀFs = δ, so with a small δ the exact KL it logs is δ to within a few percent (a step without
    the square root, or without the 2, is far off). trpo accepts a step on its first batch, with 0 < KL ≤ δ. Both
    fail if F is built from a KL whose π_old is not detached: that KL is 0 for every θ, so F = 0."""
    delta = 1e-3
    run = train(module, monkeypatch, env_id=env_id, target_kl=delta)
    (kl,) = run.scalars["losses/kl"]
    if module is npg:
        assert 0.8 * delta < kl < 1.25 * delta  # 0.9996·δ (bandit) and 1.025·δ (target) here
    else:
        assert run.scalars["charts/line_search_accepted"] == [1.0]
        assert 0 < kl <= delta


def test_line_search_restores_theta_old_when_every_step_fails(in_tmp, monkeypatch):
    """Reversed, the natural step descends the surrogate at every length the line search tries: it must reject them
    all and leave θ exactly at θ_old."""
    natural_gradient_step = trpo.natural_gradient_step

    def reversed_step(*args):
        step, residual = natural_gradient_step(*args)
        return -step, residual

    monkeypatch.setattr(trpo, "natural_gradient_step", reversed_step)
    run = train(trpo, monkeypatch, env_id="ProbeBandit-v0")
    assert run.scalars["charts/line_search_accepted"] == [0.0]
    assert run.scalars["charts/line_search_steps"] == [trpo.Args.backtrack_iters]
    assert run.scalars["losses/kl"] == [0.0]
    for before, after in zip(run.initial.policy_parameters(), run.agent.policy_parameters(), strict=True):
        assert torch.equal(before, after)


def test_target_kl_stops_the_epochs_not_the_training(in_tmp, monkeypatch):
    """ppo_clip with a tiny --target-kl: the approximate KL of the first epoch's last minibatch exceeds it, so each
    update stops after one epoch of num_minibatches steps, and training goes on to the next batch."""
    overrides = dict(env_id="ProbeBandit-v0", total_timesteps=256, update_epochs=4, num_minibatches=4)
    free = train(ppo_clip, monkeypatch, **overrides)
    stopped = train(ppo_clip, monkeypatch, target_kl=1e-9, **overrides)
    assert free.steps == 2 * 4 * 4
    assert stopped.steps == 2 * 4
    assert len(stopped.scalars["losses/kl"]) == 2 and len(stopped.batches) == 2


def test_clipped_value_loss_holds_the_critic_back(in_tmp, monkeypatch):
    """--clip-vloss takes the larger of the unclipped and the clipped squared error, so once V has moved ε toward its
    target, its gradient is 0: one update moves V(1) from 0.19 only to 0.42 with ε = 0.05 (Adam's momentum carries
    it past ε), where the unclipped loss takes it to the target of 1. The smaller of the two would not hold it back."""
    obs = torch.ones(1, 1)
    defaults = ppo_clip.Args()  # the default 10 epochs × 32 minibatches, as the figures above were measured with
    overrides = dict(env_id="ProbeConstantReward-v0", clip_coef=0.05)
    overrides.update(update_epochs=defaults.update_epochs, num_minibatches=defaults.num_minibatches)
    free = train(ppo_clip, monkeypatch, **overrides)
    clipped = train(ppo_clip, monkeypatch, clip_vloss=True, **overrides)
    with torch.no_grad():
        start, free_end, clipped_end = (agent.value(obs).item() for agent in (free.initial, free.agent, clipped.agent))
    assert clipped.initial.value(obs).item() == start and 1 - start > 0.5
    assert free_end == pytest.approx(1.0, abs=0.05)
    assert 0 < clipped_end - start < 0.5 * (1 - start)


@pytest.mark.parametrize("target_kl, betas", [(1e-6, [1.0, 2.0, 4.0]), (10.0, [1.0, 0.5, 0.25])])
def test_beta_grows_when_the_kl_overshoots_and_shrinks_when_it_undershoots(in_tmp, monkeypatch, target_kl, betas):
    run = train(ppo_kl, monkeypatch, env_id="ProbeBandit-v0", total_timesteps=3 * 128, target_kl=target_kl)
    assert run.scalars["charts/beta"] == betas


def test_clip_range_is_symmetric():
    """With ε = 0.2, r·Â is capped at 1.2·Â for Â > 0 and at 0.8·Â for Â < 0, and left alone inside [0.8, 1.2]."""
    ratio = torch.tensor([0.5, 0.9, 1.1, 1.5, 0.5, 0.9, 1.1, 1.5])
    advantages = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
    expected = torch.tensor([0.5, 0.9, 1.1, 1.2, -0.8, -0.9, -1.1, -1.5])
    torch.testing.assert_close(ppo_clip.clipped_surrogate(ratio, advantages, 0.2), expected)
