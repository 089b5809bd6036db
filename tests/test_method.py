"""Each method's update(...), pinned on small fixed batches: the line that makes the method what it is, checked against
an answer worked out here from its definition, not from the script's own helpers.

- npg, trpo: the step solves (F + λI)x = g against the Fisher matrix built explicitly (the Hessian of the KL), and is
  scaled so that ½·sᵀFs = δ; trpo keeps a step only if it raises the surrogate within the trust region.
- ppo_clip: a sample clipped on the side its advantage pushes toward adds no gradient; the loss is the clipped
  objective.
- ppo_kl: π_old is the batch's policy throughout; the loss is −(r·Â − β·KL(π_old ‖ πθ)); a larger β keeps πθ closer.
- all five, pg among them: one update on a two-armed bandit makes the better arm likelier.

Each test also checks that the wrong answers it guards against are far from the right one on its batch, so that it
cannot pass by accident."""

import copy
import importlib

import gymnasium as gym
import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Independent, Normal, kl_divergence

import npg
import ppo_clip
import ppo_kl
import trpo


def fixed_batch(script, continuous: bool, n: int = 32, seed: int = 0, small_actor: bool = False):
    """The script's Agent in float64 and a Batch of n samples drawn from its policy: states, actions, log π_old, and
    advantages, returns and values drawn at random. small_actor: a 3-4-2 actor, so that F can be built explicitly."""
    torch.manual_seed(seed)
    space = gym.spaces.Box(-1.0, 1.0, (2,)) if continuous else gym.spaces.Discrete(2)
    agent = script.Agent(3, space)
    if small_actor:
        agent.actor = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    agent.double()
    if continuous:
        with torch.no_grad():
            agent.actor_logstd.copy_(torch.tensor([-0.3, 0.2]))
    obs = torch.randn(n, 3, dtype=torch.float64)
    with torch.no_grad():
        dist = agent.dist(obs)
        actions = dist.sample()
        logprobs = dist.log_prob(actions)
        values = agent.value(obs)
    advantages = torch.randn(n, dtype=torch.float64)
    returns = values + torch.randn(n, dtype=torch.float64)
    return agent, script.Batch(obs, actions, logprobs, advantages, returns, values, dist)


def normalised(advantages: torch.Tensor) -> torch.Tensor:
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def theta(agent) -> torch.Tensor:
    return nn.utils.parameters_to_vector(agent.policy_parameters()).detach().clone()


def policy_at(agent, flat: torch.Tensor, obs: torch.Tensor):
    """πθ(·|s) for the flat θ, built from the agent's actor with torch.func, independently of Agent.dist."""
    names = [name for name, _ in agent.named_parameters() if not name.startswith("critic.")]
    shapes = [p.shape for name, p in agent.named_parameters() if name in names]
    chunks = flat.split([s.numel() for s in shapes])
    params = {name: c.view(s) for name, c, s in zip(names, chunks, shapes, strict=True)}
    actor = {name.removeprefix("actor."): p for name, p in params.items() if name.startswith("actor.")}
    out = torch.func.functional_call(agent.actor, actor, (obs,))
    if "actor_logstd" in params:
        return Independent(Normal(out, params["actor_logstd"].exp()), 1)
    return Categorical(logits=out)


def natural_gradient_ground_truth(agent, batch, delta: float, damping: float, every: int = 1):
    """At the agent's θ_old: F as the explicit Hessian of θ ↦ Ê[KL(π_old ‖ πθ)] over every `every`-th state, g =
    ∇θ Ê[πθ/π_old · Â] over all of them with Â normalised, and the steps s = √(2δ / xᵀFx)·x for x = (F + λI)⁻¹g (the
    right one) and for two wrong x: g itself, and (F − λI)⁻¹g. kl is the KL over all states."""
    theta_old = theta(agent)
    advantages = normalised(batch.advantages)

    def kl(flat, every=1):
        return kl_divergence(frozen_copy(policy_at(agent, theta_old, batch.obs[::every])),
                             policy_at(agent, flat, batch.obs[::every])).mean()  # fmt: skip

    def surrogate(flat):
        logprobs = policy_at(agent, flat, batch.obs).log_prob(batch.actions)
        return (torch.exp(logprobs - batch.logprobs) * advantages).mean()

    F = torch.autograd.functional.hessian(lambda flat: kl(flat, every), theta_old)
    g = torch.autograd.functional.jacobian(surrogate, theta_old)
    eye = torch.eye(len(g), dtype=g.dtype)

    def scaled(x):
        return torch.sqrt(2 * delta / (x @ F @ x)) * x

    steps = {
        "right": scaled(torch.linalg.solve(F + damping * eye, g)),
        "along g": scaled(g),
        "(F − λI)⁻¹g": scaled(torch.linalg.solve(F - damping * eye, g)),
    }
    return F, steps, kl, surrogate


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def far_apart(a: torch.Tensor, b: torch.Tensor) -> bool:
    return relative_error(a, b) > 0.3


def call_update(script, agent, batch, args, beta=None):
    if script is ppo_clip:
        return script.update(agent, torch.optim.Adam(agent.parameters(), lr=args.learning_rate), batch, args)
    if script is ppo_kl:
        return script.update(agent, torch.optim.Adam(agent.parameters(), lr=args.learning_rate), batch, args, beta)
    value_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate)
    if script.__name__ == "pg":
        policy_optimizer = torch.optim.Adam(agent.policy_parameters(), lr=args.learning_rate)
        return script.update(agent, policy_optimizer, value_optimizer, batch, args)
    return script.update(agent, value_optimizer, batch, args)


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
@pytest.mark.parametrize("script", [npg, trpo], ids=["npg", "trpo"])
def test_natural_step_solves_the_damped_fisher_system(script, continuous):
    """θ − θ_old after update is s = √(2δ / xᵀFx)·x with x = (F + λI)⁻¹g, F built explicitly (trpo: s shortened by
    the line search's αʲ−¹), and ½·sᵀFs = δ for npg's step. A step along g, or along (F − λI)⁻¹g, is far from it."""
    agent, batch = fixed_batch(script, continuous, small_actor=True)
    args = script.Args(target_kl=0.01, cg_damping=0.1, cg_iters=100)
    theta_old = theta(agent)
    F, steps, _, _ = natural_gradient_ground_truth(agent, batch, args.target_kl, args.cg_damping)
    assert torch.linalg.eigvalsh(F).max() > args.cg_damping, "the damping's sign must matter on this batch"
    for wrong in ("along g", "(F − λI)⁻¹g"):
        assert far_apart(steps[wrong], steps["right"]), wrong
    metrics = call_update(script, agent, batch, args)
    step = theta(agent) - theta_old
    if script is trpo:
        assert metrics["charts/line_search_accepted"]
        step = step / args.backtrack_coef ** (metrics["charts/line_search_steps"] - 1)
    assert relative_error(step, steps["right"]) < 1e-3  # CG stops at ‖r‖² < 1e-10: 5e-5 and 1e-5 here
    if script is npg:
        assert 0.5 * (step @ F @ step).item() == pytest.approx(args.target_kl, rel=1e-6)


@pytest.mark.parametrize("script", [npg, trpo], ids=["npg", "trpo"])
def test_fisher_subsample_builds_F_from_every_kth_state(script):
    """With --fisher-subsample 3, F is the Hessian of the KL over states 0, 3, 6, …, and g is still over all of them:
    the step is the ground truth's for that F, far from the step with F over all the states (npg: ½·sᵀFs = δ there)."""
    agent, batch = fixed_batch(script, continuous=True, n=30, small_actor=True)
    args = script.Args(target_kl=0.01, cg_damping=0.1, cg_iters=100, fisher_subsample=3)
    theta_old = theta(agent)
    F, steps, _, _ = natural_gradient_ground_truth(agent, batch, args.target_kl, args.cg_damping, every=3)
    _, full, _, _ = natural_gradient_ground_truth(agent, batch, args.target_kl, args.cg_damping)
    assert relative_error(full["right"], steps["right"]) > 0.05, "F over every 3rd state must differ on this batch"
    metrics = call_update(script, agent, batch, args)
    step = theta(agent) - theta_old
    if script is trpo:
        assert metrics["charts/line_search_accepted"]
        step = step / args.backtrack_coef ** (metrics["charts/line_search_steps"] - 1)
    assert relative_error(step, steps["right"]) < 1e-3
    if script is npg:
        assert 0.5 * (step @ F @ step).item() == pytest.approx(args.target_kl, rel=1e-6)


def scaled_natural_step(factor: float):
    """trpo's natural_gradient_step, its step s multiplied by factor."""
    natural_gradient_step = trpo.natural_gradient_step

    def step(*args):
        s, residual = natural_gradient_step(*args)
        return factor * s, residual

    return step


@pytest.mark.parametrize("stretch", [1.0, 3.0], ids=["natural step", "three times too long"])
@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
def test_trpo_keeps_an_improving_step_inside_the_trust_region(continuous, stretch, monkeypatch):
    """trpo's update, measured from outside: L(θ) rises and the exact KL is ≤ δ, also when the proposed step is three
    times too long (its KL is then above δ, so the search must backtrack); and it logs the L and KL measured here."""
    agent, batch = fixed_batch(trpo, continuous, small_actor=True)
    args = trpo.Args(target_kl=0.01)
    _, _, kl, surrogate = natural_gradient_ground_truth(agent, batch, args.target_kl, args.cg_damping)
    theta_old = theta(agent)
    monkeypatch.setattr(trpo, "natural_gradient_step", scaled_natural_step(stretch))
    metrics = call_update(trpo, agent, batch, args)
    theta_new, tries = theta(agent), metrics["charts/line_search_steps"]
    assert metrics["charts/line_search_accepted"]
    assert surrogate(theta_new) > surrogate(theta_old) + 1e-4
    assert 0 < kl(theta_new) <= args.target_kl
    assert metrics["losses/kl"].item() == pytest.approx(kl(theta_new).item(), rel=1e-9)
    assert metrics["losses/policy_loss"].item() == pytest.approx(-surrogate(theta_new).item(), rel=1e-9)
    if stretch > 1:
        first_try = theta_old + (theta_new - theta_old) / args.backtrack_coef ** (tries - 1)
        assert tries > 1 and kl(first_try) > args.target_kl


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
def test_trpo_rejects_a_descending_step_and_restores_theta_bit_for_bit(continuous, monkeypatch):
    """Reversed, the step lowers L(θ) at every length tried, inside the trust region: update must keep none of them,
    leave θ exactly θ_old, and log θ_old's L and a KL of 0."""
    agent, batch = fixed_batch(trpo, continuous, small_actor=True)
    args = trpo.Args(target_kl=0.01)
    _, _, kl, surrogate = natural_gradient_ground_truth(agent, batch, args.target_kl, args.cg_damping)
    saved = [p.detach().clone() for p in agent.policy_parameters()]
    theta_old = theta(agent)
    monkeypatch.setattr(trpo, "natural_gradient_step", scaled_natural_step(-1.0))
    metrics = call_update(trpo, agent, batch, args)
    assert not metrics["charts/line_search_accepted"]
    assert metrics["charts/line_search_steps"] == args.backtrack_iters
    assert all(torch.equal(p, q) for p, q in zip(agent.policy_parameters(), saved, strict=True))
    assert metrics["losses/kl"] == 0
    assert metrics["losses/policy_loss"].item() == pytest.approx(-surrogate(theta_old).item(), rel=1e-12)


def deterministic_minibatches(monkeypatch):
    """torch.randperm → arange, so that the minibatches of an update are known: mb k is the k-th slice."""
    monkeypatch.setattr(torch, "randperm", lambda n, device=None, **_: torch.arange(n, device=device))


def watch_losses(script, agent, monkeypatch):
    """Records, at each optimizer step of update: the loss it minimises, a copy of the agent as it stands before the
    step, and the loss's gradient with respect to θ (the policy's parameters)."""
    seen = []
    guarded_step = script.guarded_step

    def spy(optimizer, loss, *args):
        grad = torch.autograd.grad(loss, agent.policy_parameters(), retain_graph=True)
        seen.append((loss.detach().clone(), copy.deepcopy(agent), grad))
        return guarded_step(optimizer, loss, *args)

    monkeypatch.setattr(script, "guarded_step", spy)
    return seen


def value_term(agent, batch, mb):
    return 0.5 * ((agent.value(batch.obs[mb]) - batch.returns[mb]) ** 2).mean()


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
def test_ppo_clip_loss_is_the_clipped_objective(continuous, monkeypatch):
    """At every optimizer step, update's loss is −Ê[min(r·Â, clip(r, 1−ε, 1+ε)·Â)] − c₂·H + c₁·½(V − R̂)² on that
    minibatch, with Â normalised over it; the closed form below (min(r, 1+ε)·Â for Â ≥ 0, max(r, 1−ε)·Â for Â < 0) is
    not the script's expression."""
    agent, batch = fixed_batch(ppo_clip, continuous, n=32)
    batch = batch._replace(logprobs=batch.logprobs + 0.3 * torch.randn(32, dtype=torch.float64))  # r ≠ 1 from the start
    args = ppo_clip.Args(update_epochs=3, num_minibatches=2, ent_coef=0.01, vf_coef=0.5, clip_coef=0.2)
    deterministic_minibatches(monkeypatch)
    seen = watch_losses(ppo_clip, agent, monkeypatch)
    call_update(ppo_clip, agent, batch, args)
    assert len(seen) == 3 * 2
    for k, (loss, then, _) in enumerate(seen):
        mb = torch.arange(32).tensor_split(2)[k % 2]
        with torch.no_grad():
            dist = then.dist(batch.obs[mb])
            r = torch.exp(dist.log_prob(batch.actions[mb]) - batch.logprobs[mb])
            a = normalised(batch.advantages[mb])
            eps = args.clip_coef
            objective = torch.where(a >= 0, torch.clamp(r, max=1 + eps) * a, torch.clamp(r, min=1 - eps) * a)
            expected = (
                -objective.mean() - args.ent_coef * dist.entropy().mean() + args.vf_coef * value_term(then, batch, mb)
            )
            unclipped = (
                -(r * a).mean() - args.ent_coef * dist.entropy().mean() + args.vf_coef * value_term(then, batch, mb)
            )
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
        assert abs(unclipped - expected) > 1e-3, "the clip must be active at every step of this test"


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
def test_ppo_clip_sample_clipped_on_its_side_adds_no_gradient(continuous, monkeypatch):
    """Half the samples have r = 1.5 with Â > 0 or r = 1/1.5 with Â < 0: outside [0.8, 1.2] on the side Â pushes
    toward. The gradient of update's loss with respect to θ is then the gradient of the other half's r·Â alone
    (entropy bonus off)."""
    agent, batch = fixed_batch(ppo_clip, continuous, n=32)
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(16)
    advantages = sign * (1 + torch.rand(32, dtype=torch.float64))
    advantages = advantages - advantages.mean()  # mean 0: normalising keeps each sign
    clipped = torch.arange(32) < 16
    logprobs = batch.logprobs - torch.where(clipped, torch.sign(advantages) * torch.log(torch.tensor(1.5)), 0.0)
    batch = batch._replace(advantages=advantages, logprobs=logprobs.double())
    args = ppo_clip.Args(update_epochs=1, num_minibatches=1, ent_coef=0.0, clip_coef=0.2)
    seen = watch_losses(ppo_clip, agent, monkeypatch)
    deterministic_minibatches(monkeypatch)
    call_update(ppo_clip, agent, batch, args)
    ((_, then, grad),) = seen
    params = then.policy_parameters()
    dist = then.dist(batch.obs)
    r = torch.exp(dist.log_prob(batch.actions) - batch.logprobs)
    a = normalised(batch.advantages)
    expected = torch.autograd.grad(-(r * a * ~clipped).sum() / 32, params, retain_graph=True)
    for got, want in zip(grad, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    unclipped = torch.autograd.grad(-(r * a).mean(), params)
    assert far_apart(flat(unclipped), flat(expected)), "the clip must change the gradient on this batch"


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def frozen_copy(dist):
    """dist with its parameters detached."""
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits.detach())
    return Independent(Normal(dist.mean.detach(), dist.stddev.detach()), 1)


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
def test_ppo_kl_loss_holds_pi_old_fixed_at_the_batch_policy(continuous, monkeypatch):
    """At every optimizer step of 3 epochs × 2 minibatches, update's loss is −Ê[r·Â − β·KL(π_old ‖ πθ)] − c₂·H +
    c₁·½(V − R̂)² on that minibatch, where π_old is the policy that collected the batch (a copy taken here before the
    update), not the policy at the start of the epoch or the minibatch: with those, the KL term would be 0."""
    agent, batch = fixed_batch(ppo_kl, continuous, n=32)
    args = ppo_kl.Args(update_epochs=3, num_minibatches=2, ent_coef=0.01, vf_coef=0.5)
    beta = 3.0
    with torch.no_grad():
        pi_old = frozen_copy(copy.deepcopy(agent).dist(batch.obs))
    deterministic_minibatches(monkeypatch)
    seen = watch_losses(ppo_kl, agent, monkeypatch)
    call_update(ppo_kl, agent, batch, args, beta)
    assert len(seen) == 3 * 2
    for k, (loss, then, _) in enumerate(seen):
        mb = torch.arange(32).tensor_split(2)[k % 2]
        with torch.no_grad():
            dist = then.dist(batch.obs[mb])
            r = torch.exp(dist.log_prob(batch.actions[mb]) - pi_old.log_prob(batch.actions)[mb])
            old = Categorical(logits=pi_old.logits[mb]) if not continuous else Independent(
                Normal(pi_old.mean[mb], pi_old.stddev[mb]), 1
            )  # fmt: skip
            kl = kl_divergence(old, dist)
            a = normalised(batch.advantages[mb])
            rest = -args.ent_coef * dist.entropy().mean() + args.vf_coef * value_term(then, batch, mb)
            expected = -(r * a - beta * kl).mean() + rest
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
        if k >= 2:  # past the first epoch, πθ has moved away from π_old
            assert kl.mean() > 1e-6 and abs(expected - (-(r * a).mean() + rest)) > 1e-6


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
def test_ppo_kl_larger_beta_keeps_the_policy_closer(continuous):
    """The same batch and start, β = 0.01 and β = 100: the exact KL(π_old ‖ πθ) after the larger β's update is the
    smaller, by a wide margin; the update logs that KL. A penalty of the wrong sign pushes πθ away instead."""
    kls = {}
    for beta in (0.01, 100.0):
        agent, batch = fixed_batch(ppo_kl, continuous, n=64)
        with torch.no_grad():
            pi_old = frozen_copy(agent.dist(batch.obs))
        args = ppo_kl.Args(update_epochs=10, num_minibatches=2, learning_rate=3e-3)
        metrics = call_update(ppo_kl, agent, batch, args, beta)
        with torch.no_grad():
            kls[beta] = kl_divergence(pi_old, agent.dist(batch.obs)).mean().item()
        assert metrics["losses/kl"].item() == pytest.approx(kls[beta], rel=1e-9)
    assert kls[100.0] < 0.5 * kls[0.01], kls


BANDIT_SCRIPTS = ["pg", "npg", "trpo", "ppo_clip", "ppo_kl"]


@pytest.mark.parametrize("name", BANDIT_SCRIPTS)
def test_one_update_on_a_bandit_batch_makes_the_better_arm_likelier(name):
    """A two-armed bandit batch, from one state: arm 1 pays 1 and arm 0 pays 0, so Â > 0 exactly on arm 1. One update
    must raise π(arm 1), whatever the method; a flipped sign in the policy loss lowers it."""
    script = importlib.import_module(name)
    torch.manual_seed(0)
    agent = script.Agent(1, gym.spaces.Discrete(2)).double()
    obs = torch.ones(64, 1, dtype=torch.float64)
    actions = torch.arange(64, dtype=torch.float64) % 2
    with torch.no_grad():
        old_dist, values = agent.dist(obs), agent.value(obs)
        logprobs = old_dist.log_prob(actions)
        before = agent.dist(obs[:1]).probs[0, 1].item()
    returns = actions.clone()  # the arm's payoff
    batch = script.Batch(obs, actions, logprobs, returns - values, returns, values, old_dist)
    call_update(script, agent, batch, script.Args(), beta=1.0)
    with torch.no_grad():
        after = agent.dist(obs[:1]).probs[0, 1].item()
    assert after > before + 1e-4, (before, after)
