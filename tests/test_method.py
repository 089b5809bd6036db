"""What makes each method the method, from its math functions up through update(...) to a run of main: each behaviour
in one section, checked at every level where it can break.

- npg, trpo: F·v is the Hessian of the KL, conjugate gradient solves it, and the step solves (F + λI)x = g against the
  Fisher matrix built explicitly, scaled so that ½·sᵀ(F + λI)s = δ; on every k-th state with --fisher-subsample;
  δ and λ by default grow with the Box action's dimensions.
- trpo: the line search keeps a step only if it raises the surrogate within the trust region, and otherwise (or on a
  non-finite step) leaves θ_old bit for bit.
- ppo_clip: the clipped objective, a sample clipped on the side its advantage pushes toward adds no gradient, the
  clipped value loss and the early stop.
- ppo_kl: π_old is the batch's policy throughout; the loss is −(r·Â − β·KL(π_old ‖ πθ)); β's rule, in the function and
  in a run; a larger β keeps πθ closer.
- all five: one update on a two-armed bandit makes the better arm likelier; zero advantages move no policy; a
  non-finite loss moves nothing.

Each test also checks that the wrong answers it guards against are far from the right one on its batch, so that it
cannot pass by accident."""

import copy
import dataclasses
import importlib
import importlib.util

import gymnasium as gym
import pytest
import torch
from conftest import initial_agent, only_run, read_scalars, saved_checkpoint, tiny_args, train, train_and_load
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


def natural_gradient_ground_truth(agent, batch, delta: float, damping: float, every: int = 1, damped_size=True):
    """At the agent's θ_old: F as the explicit Hessian of θ ↦ Ê[KL(π_old ‖ πθ)] over every `every`-th state, g =
    ∇θ Ê[πθ/π_old · Â] over all of them with Â normalised, and the steps s = √(2δ / xᵀ(F + λI)x)·x (not damped_size:
    xᵀFx) for x = (F + λI)⁻¹g (the right one) and for two wrong x: g itself, and (F − λI)⁻¹g. kl is the KL over all
    states."""
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
        return torch.sqrt(2 * delta / (x @ (F + damped_size * damping * eye) @ x)) * x

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
    if script in (npg, trpo):  # main resolves their default δ and λ from the action space
        space = gym.spaces.Box(-1, 1, agent.actor_logstd.shape) if agent.continuous else gym.spaces.Discrete(2)
        delta = script.default_target_kl(space) if args.target_kl is None else args.target_kl
        damping = script.default_cg_damping(space) if args.cg_damping is None else args.cg_damping
        args = dataclasses.replace(args, target_kl=delta, cg_damping=damping)
    if script is ppo_clip:
        return script.update(agent, torch.optim.Adam(agent.parameters(), lr=args.learning_rate), batch, args)
    if script is ppo_kl:
        return script.update(agent, torch.optim.Adam(agent.parameters(), lr=args.learning_rate), batch, args, beta)
    value_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate)
    if script.__name__ == "pg":
        policy_optimizer = torch.optim.Adam(agent.policy_parameters(), lr=args.learning_rate)
        return script.update(agent, policy_optimizer, value_optimizer, batch, args)
    return script.update(agent, value_optimizer, batch, args)


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def frozen_copy(dist):
    """dist with its parameters detached."""
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits.detach())
    return Independent(Normal(dist.mean.detach(), dist.stddev.detach()), 1)


# ---- npg and trpo: the Fisher-vector product, conjugate gradient and the natural step


def small_policy(script, continuous: bool, seed: int = 0):
    """The script's Agent with a 3-4-2 actor, in float64, and a batch of 32 states, actions and advantages."""
    torch.manual_seed(seed)
    space = gym.spaces.Box(-1.0, 1.0, (2,)) if continuous else gym.spaces.Discrete(2)
    agent = script.Agent(3, space)
    agent.actor = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    agent.double()
    if continuous:
        with torch.no_grad():
            agent.actor_logstd.copy_(torch.tensor([-0.3, 0.2]))
    obs = torch.randn(32, 3, dtype=torch.float64)
    with torch.no_grad():
        old_dist = agent.dist(obs)
        actions = old_dist.sample()
        logprobs = old_dist.log_prob(actions)
    advantages = torch.randn(32, dtype=torch.float64)
    return agent, obs, actions, logprobs, (advantages - advantages.mean()) / advantages.std(), old_dist


def mean_kl_of_flat(agent, obs, old_dist):
    """θ ↦ Ê[KL(π_old ‖ πθ)], built from the flat θ independently of the script's Agent.dist."""
    names = [n for n, _ in agent.named_parameters() if not n.startswith("critic.")]
    shapes = [p.shape for n, p in agent.named_parameters() if n in names]

    def kl(flat):
        chunks = flat.split([s.numel() for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        actor = {n.removeprefix("actor."): p for n, p in params.items() if n.startswith("actor.")}
        out = torch.func.functional_call(agent.actor, actor, (obs,))
        if "actor_logstd" in params:
            new = Independent(Normal(out, params["actor_logstd"].exp()), 1)
        else:
            new = Categorical(logits=out)
        return kl_divergence(old_dist, new).mean()

    return kl


def fvp_of(script, agent, obs, old_dist):
    """v ↦ F·v at the agent's current θ = θ_old, as update builds it (old_dist, π_old, is the agent's own there, and
    fisher_vector_product takes it from the agent)."""
    return script.fisher_vector_product(agent, obs)


def objective_of(script, agent, obs, actions, logprobs, advantages, old_dist):
    """() ↦ (L(θ), Ê[KL(π_old ‖ πθ)]) at the agent's current θ, as the script's update builds it."""

    def objective():
        dist = agent.dist(obs)
        return script.surrogate(dist.log_prob(actions), logprobs, advantages), kl_divergence(old_dist, dist).mean()

    return objective


def natural_step(script, agent, obs, actions, logprobs, advantages, old_dist, delta, iters=10, damping=0.1):
    """The script's natural gradient step from the agent's current θ, wired as update wires it."""
    params = agent.policy_parameters()
    surrogate, _ = objective_of(script, agent, obs, actions, logprobs, advantages, old_dist)()
    g = script.flat_grad(surrogate, params)
    return script.natural_gradient_step(g, script.fisher_vector_product(agent, obs), delta, iters, damping)


def surrogate_of(script, agent, obs, actions, logprobs, advantages):
    with torch.no_grad():
        return script.surrogate(agent.dist(obs).log_prob(actions), logprobs, advantages)


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("script", ["npg", "trpo"], indirect=True)
def test_fvp_equals_explicit_kl_hessian(script, continuous):
    agent, obs, _, _, _, old_dist = small_policy(script, continuous)
    theta = torch.nn.utils.parameters_to_vector(agent.policy_parameters()).detach()
    hessian = torch.autograd.functional.hessian(mean_kl_of_flat(agent, obs, old_dist), theta)
    assert hessian.shape == (len(theta), len(theta)) and hessian.abs().max() > 1e-3
    fvp = fvp_of(script, agent, obs, old_dist)
    for seed in range(3):  # the one ∇θ KL serves every product
        v = torch.randn(len(theta), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), hessian @ v, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("script", ["npg", "trpo"], indirect=True)
def test_fvp_on_gaussian_log_std_is_diag_2_without_cross_terms(script):
    agent, obs, _, _, _, old_dist = small_policy(script, continuous=True)
    params = agent.policy_parameters()
    n = sum(p.numel() for p in params)
    (k,) = [k for k, p in enumerate(params) if p is agent.actor_logstd]
    start = sum(p.numel() for p in params[:k])
    fvp = fvp_of(script, agent, obs, old_dist)
    for i in (start, start + 1):  # the log σ coordinates of the flat θ
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = 1.0
        column = fvp(e)
        expected = torch.zeros(n, dtype=torch.float64)
        expected[i] = 2.0  # ∂²KL/∂(log σ)² = 2; the mean and log σ do not interact
        torch.testing.assert_close(column, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [5, 30])
@pytest.mark.parametrize("script", ["npg", "trpo"], indirect=True)
def test_conjugate_gradient_matches_direct_solve(script, n):
    generator = torch.Generator().manual_seed(n)
    q = torch.randn(n, n, dtype=torch.float64, generator=generator)
    a = q @ q.T / n + torch.eye(n, dtype=torch.float64)  # symmetric positive definite, condition number ≈ 5
    b = torch.randn(n, dtype=torch.float64, generator=generator)
    x, residual = script.conjugate_gradient(lambda v: a @ v, b, iters=n, tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    assert residual < 1e-8


@pytest.mark.parametrize("script", ["npg", "trpo"], indirect=True)
def test_conjugate_gradient_of_zero_is_zero(script):
    a = torch.eye(4, dtype=torch.float64) * 3
    x, residual = script.conjugate_gradient(lambda v: a @ v, torch.zeros(4, dtype=torch.float64), iters=10)
    assert torch.equal(x, torch.zeros(4, dtype=torch.float64)) and residual == 0


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("script", ["npg", "trpo"], indirect=True)
def test_natural_step_meets_the_kl_constraint(script, continuous):
    """½·sᵀ(F + λI)s = δ, with F the explicit Hessian of the KL, and the KL measured after the step
    is ½·sᵀFs to second order: its error shrinks with δ."""
    agent, obs, actions, logprobs, advantages, old_dist = small_policy(script, continuous)
    params = agent.policy_parameters()
    theta_old = torch.nn.utils.parameters_to_vector(params).detach()
    fisher = torch.autograd.functional.hessian(mean_kl_of_flat(agent, obs, old_dist), theta_old)  # not the script's F·v
    damping = 0.1 * torch.eye(len(theta_old), dtype=fisher.dtype)
    errors = []
    for delta in (1e-2, 1e-4):
        step, residual = natural_step(script, agent, obs, actions, logprobs, advantages, old_dist, delta, 20, 0.1)
        assert 0.5 * (step @ (fisher + damping) @ step).item() == pytest.approx(delta, rel=1e-9)
        quadratic = 0.5 * (step @ fisher @ step).item()
        assert quadratic < 0.99 * delta, "the damping's share of the step's size must show on this batch"
        script.set_flat_params(params, theta_old + step)
        with torch.no_grad():
            errors.append(abs(kl_divergence(old_dist, agent.dist(obs)).mean().item() / quadratic - 1))
        script.set_flat_params(params, theta_old)
    assert errors[0] < 0.25 and errors[1] < 0.05 and errors[1] < errors[0] / 4


@pytest.mark.parametrize("script", ["npg", "trpo"], indirect=True)
def test_natural_step_ascends_the_surrogate(script):
    agent, obs, actions, logprobs, advantages, old_dist = small_policy(script, continuous=False)
    params = agent.policy_parameters()
    theta_old = torch.nn.utils.parameters_to_vector(params).detach()
    step, _ = natural_step(script, agent, obs, actions, logprobs, advantages, old_dist, 1e-4, 20)
    before = surrogate_of(script, agent, obs, actions, logprobs, advantages)
    script.set_flat_params(params, theta_old + step)
    assert surrogate_of(script, agent, obs, actions, logprobs, advantages) > before


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("script", ["npg", "trpo"], indirect=True)
def test_zero_gradient_gives_zero_step(script, continuous):
    agent, obs, actions, logprobs, advantages, old_dist = small_policy(script, continuous)
    zeros = torch.zeros_like(advantages)
    step, residual = natural_step(script, agent, obs, actions, logprobs, zeros, old_dist, 0.01)
    assert torch.equal(step, torch.zeros_like(step)) and residual == 0


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
@pytest.mark.parametrize("script", [npg, trpo], ids=["npg", "trpo"])
def test_natural_step_solves_the_damped_fisher_system(script, continuous):
    """θ − θ_old after update is s = √(2δ / xᵀ(F + λI)x)·x with x = (F + λI)⁻¹g, F built explicitly (trpo: s
    shortened by the line search's αʲ−¹), so ½·sᵀ(F + λI)s = δ; sized by xᵀFx it would be longer. A step along g, or
    along (F − λI)⁻¹g, is far from it."""
    agent, batch = fixed_batch(script, continuous, small_actor=True)
    args = script.Args(target_kl=0.01, cg_damping=0.1, cg_iters=100)
    theta_old = theta(agent)
    F, steps, _, _ = natural_gradient_ground_truth(agent, batch, args.target_kl, args.cg_damping)
    assert torch.linalg.eigvalsh(F).max() > args.cg_damping, "the damping's sign must matter on this batch"
    _, undamped, _, _ = natural_gradient_ground_truth(agent, batch, args.target_kl, args.cg_damping, damped_size=False)
    assert relative_error(undamped["right"], steps["right"]) > 0.05, "xᵀFx and xᵀ(F + λI)x must differ on this batch"
    for wrong in ("along g", "(F − λI)⁻¹g"):
        assert far_apart(steps[wrong], steps["right"]), wrong
    metrics = call_update(script, agent, batch, args)
    step = theta(agent) - theta_old
    if script is trpo:
        assert metrics["charts/line_search_accepted"]
        step = step / args.backtrack_coef ** (metrics["charts/line_search_steps"] - 1)
    assert relative_error(step, steps["right"]) < 1e-3  # CG stops at ‖r‖² < 1e-10: 5e-5 and 1e-5 here
    damped = F + args.cg_damping * torch.eye(len(step), dtype=F.dtype)
    assert 0.5 * (step @ damped @ step).item() == pytest.approx(args.target_kl, rel=1e-6)


@pytest.mark.parametrize("script", [npg, trpo], ids=["npg", "trpo"])
def test_fisher_subsample_builds_F_from_every_kth_state(script):
    """With --fisher-subsample 3, F is the Hessian of the KL over states 0, 3, 6, …, and g is still over all of them:
    the step is the ground truth's for that F, far from the step with F over all the states (npg: ½·sᵀ(F + λI)s = δ
    there)."""
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
        damped = F + args.cg_damping * torch.eye(len(step), dtype=F.dtype)
        assert 0.5 * (step @ damped @ step).item() == pytest.approx(args.target_kl, rel=1e-6)


@pytest.mark.parametrize("env_id", ["ProbeBandit-v0", "ProbeTarget-v0"])
@pytest.mark.parametrize("module", [npg, trpo], ids=["npg", "trpo"])
def test_natural_step_meets_the_trust_region(module, env_id, in_tmp, monkeypatch):
    """npg's step has ½·sᵀ(F + λI)s = δ, and on these probes F dwarfs λ = 0.1, so with a small δ the exact KL it logs
    is δ to within a few percent (a step without the square root, or without the 2, is far off). trpo accepts a step
    on its first batch, with 0 < KL ≤ δ. Both
    fail if F is built from a KL whose π_old is not detached: that KL is 0 for every θ, so F = 0."""
    delta = 1e-3
    run = train(module, monkeypatch, env_id=env_id, target_kl=delta)
    (kl,) = run.scalars["losses/kl"]
    if module is npg:
        assert 0.8 * delta < kl < 1.25 * delta  # 0.956·δ (bandit) and 0.985·δ (target) here
    else:
        assert run.scalars["charts/line_search_accepted"] == [1.0]
        assert 0 < kl <= delta


# ---- trpo: the line search keeps a step only if it improves inside the trust region, else restores θ_old


@pytest.mark.parametrize("continuous", [False, True])
def test_accepted_line_search_step_improves_within_the_trust_region(continuous):
    agent, obs, actions, logprobs, advantages, old_dist = small_policy(trpo, continuous)
    params = agent.policy_parameters()
    theta_old = torch.nn.utils.parameters_to_vector(params).detach()
    before = surrogate_of(trpo, agent, obs, actions, logprobs, advantages)
    delta = 0.01
    step, _ = natural_step(trpo, agent, obs, actions, logprobs, advantages, old_dist, delta)
    objective = objective_of(trpo, agent, obs, actions, logprobs, advantages, old_dist)
    with torch.no_grad():
        # A step twice too long violates the KL bound at j = 0, so the search must backtrack.
        accepted, tries = trpo.line_search(params, theta_old, 2 * step, objective, before, delta, 0.8, 10)
        kl = kl_divergence(old_dist, agent.dist(obs)).mean()
    assert accepted and tries > 1
    assert kl <= delta and surrogate_of(trpo, agent, obs, actions, logprobs, advantages) > before
    theta = torch.nn.utils.parameters_to_vector(params)
    torch.testing.assert_close(theta, theta_old + 0.8 ** (tries - 1) * 2 * step)


@pytest.mark.parametrize("how", ["downhill", "zero", "kl_too_small"])
def test_rejected_line_search_restores_theta_bit_for_bit(how):
    agent, obs, actions, logprobs, advantages, old_dist = small_policy(trpo, continuous=True)
    params = agent.policy_parameters()
    saved = [p.detach().clone() for p in params]
    theta_old = torch.nn.utils.parameters_to_vector(params).detach()
    step, _ = natural_step(trpo, agent, obs, actions, logprobs, advantages, old_dist, 0.01)
    step, delta = {"downhill": (-step, 0.01), "zero": (0 * step, 0.01), "kl_too_small": (step, 1e-12)}[how]
    objective = objective_of(trpo, agent, obs, actions, logprobs, advantages, old_dist)
    before = surrogate_of(trpo, agent, obs, actions, logprobs, advantages)
    with torch.no_grad():
        accepted, tries = trpo.line_search(params, theta_old, step, objective, before, delta, 0.8, 10)
    assert not accepted and tries == 10
    assert all(torch.equal(p, q) for p, q in zip(params, saved, strict=True))


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
    args = trpo.Args(target_kl=0.01, cg_damping=0.1)
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
    args = trpo.Args(target_kl=0.01, cg_damping=0.1)
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


DIMS = [("InvertedPendulum-v5", 1, 0.01), ("HalfCheetah-v5", 6, 0.06), ("Humanoid-v5", 17, 0.17)]


@pytest.mark.parametrize("env_id, dims, delta", DIMS)
@pytest.mark.parametrize("script", [npg, trpo], ids=["npg", "trpo"])
def test_default_trust_region_grows_with_the_action_dimensions(script, in_tmp, env_id, dims, delta):
    """At their defaults, npg's and trpo's δ for Box actions is 0.01 per dimension, and λ 0.1 per dimension: 8 updates
    on InvertedPendulum-v5 (1 dimension), HalfCheetah-v5 (6) and Humanoid-v5 (17) keep every measured KL ≤ δ (npg,
    with no line search: 1.1·δ) and reach
    above 0.3·δ (the damping's share of ½·sᵀ(F + λI)s = δ keeps the KL below δ: 0.65·δ and 0.43·δ on HalfCheetah and
    Humanoid), which a flat 0.01 or 0.02 would not all do. main resolves both once, and the checkpoint holds the
    numbers."""
    assert script.Args().target_kl is None and script.Args().cg_damping is None
    assert gym.make(env_id).action_space.shape == (dims,)
    checkpoint, _, scalars = train_and_load(script, env_id=env_id, total_timesteps=2048, num_envs=2)
    assert checkpoint["args"]["target_kl"] == pytest.approx(delta, rel=1e-12)
    assert checkpoint["args"]["cg_damping"] == pytest.approx(10 * delta, rel=1e-12)
    kls = torch.tensor(scalars["losses/kl"])
    bound = delta if script is trpo else 1.1 * delta  # npg's KL is ½·sᵀFs to second order: 1.007·δ once here
    assert len(kls) == 8 and (kls <= bound).all() and kls.max() > 0.3 * delta


def test_default_trust_region_on_discrete_actions():
    """On Discrete actions the defaults do not grow: δ 0.01 for npg, which has no line search, 0.02 for trpo, and λ 0.1
    for both."""
    space = gym.spaces.Discrete(6)
    assert (npg.default_target_kl(space), trpo.default_target_kl(space)) == (0.01, 0.02)
    assert npg.default_cg_damping(space) == trpo.default_cg_damping(space) == 0.1


def test_trpo_skips_the_line_search_on_a_non_finite_step(in_tmp, monkeypatch):
    """NaN advantages give a NaN step: the line search is not even tried, and θ stays θ_old bit for bit."""
    calls = []
    monkeypatch.setattr(trpo, "line_search", lambda *args: calls.append(args))
    monkeypatch.setattr(trpo, "compute_gae", lambda rewards, *_: torch.full_like(rewards, torch.nan))
    trpo.main(tiny_args(trpo, env_id="Pendulum-v1", total_timesteps=128, save_model=True))
    assert calls == []
    scalars = read_scalars(only_run())
    assert scalars["charts/line_search_steps"] == [0.0], "no step was tried"
    assert scalars["charts/line_search_accepted"] == [0.0], "so none was accepted"
    weights = saved_checkpoint()["agent"]
    for name, weight in initial_agent(trpo, "Pendulum-v1").state_dict().items():
        assert torch.equal(weights[name], weight), name


# ---- ppo_clip: the clipped objective


def ratios_and_advantages():
    """Every combination of r below, inside and above [0.8, 1.2] with Â positive and negative."""
    r = torch.tensor([0.5, 0.79, 0.9, 1.0, 1.1, 1.21, 1.7], dtype=torch.float64)
    a = torch.tensor([-2.0, -0.3, 0.4, 1.5], dtype=torch.float64)
    r, a = torch.meshgrid(r, a, indexing="ij")
    return r.reshape(-1).clone().requires_grad_(True), a.reshape(-1)


def test_clipped_objective_is_the_elementwise_min_and_flat_where_clipped():
    eps = 0.2
    r, a = ratios_and_advantages()
    objective = ppo_clip.clipped_surrogate(r, a, eps)
    # Closed form: for Â ≥ 0 the objective is min(r, 1+ε)·Â; for Â < 0 it is max(r, 1−ε)·Â.
    expected = torch.where(a >= 0, torch.clamp(r, max=1 + eps) * a, torch.clamp(r, min=1 - eps) * a)
    torch.testing.assert_close(objective, expected.detach())
    (grad,) = torch.autograd.grad(objective.sum(), r)
    clipped = ((a > 0) & (r > 1 + eps)) | ((a < 0) & (r < 1 - eps))
    assert clipped.sum() == 8 and (~clipped).sum() == 20
    assert torch.equal(grad[clipped], torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(grad[~clipped], a[~clipped])


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


def value_term(agent, batch, mb, clip=None):
    """½(V − R̂)² on the minibatch mb; with clip, the larger of it and ½(V_old + clamp(V − V_old, ±clip) − R̂)²."""
    values = agent.value(batch.obs[mb])
    error = (values - batch.returns[mb]) ** 2
    if clip is not None:
        clipped = batch.values[mb] + torch.clamp(values - batch.values[mb], -clip, clip)
        error = torch.maximum(error, (clipped - batch.returns[mb]) ** 2)
    return 0.5 * error.mean()


def clipped_objective(r, a, eps):
    """min(r, 1+ε)·Â for Â ≥ 0 and max(r, 1−ε)·Â for Â < 0: min(r·Â, clip(r, 1−ε, 1+ε)·Â), not in the script's form."""
    return torch.where(a >= 0, torch.clamp(r, max=1 + eps) * a, torch.clamp(r, min=1 - eps) * a)


@pytest.mark.parametrize("clip_vloss", [False, True], ids=["plain", "clip-vloss"])
@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
def test_ppo_clip_loss_is_the_clipped_objective(continuous, clip_vloss, monkeypatch):
    """At every optimizer step, update's loss is −Ê[min(r·Â, clip(r, 1−ε, 1+ε)·Â)] − c₂·H + c₁·½(V − R̂)² on that
    minibatch, with Â normalised over it (with --clip-vloss, the critic's term clipped at ±ε around V_old); and the
    policy loss and clipfrac it returns are those of the whole batch at the same ε."""
    agent, batch = fixed_batch(ppo_clip, continuous, n=32)
    batch = batch._replace(
        logprobs=batch.logprobs + 0.3 * torch.randn(32, dtype=torch.float64),  # r ≠ 1 from the start
        values=batch.values + 0.35 * torch.randn(32, dtype=torch.float64),  # V − V_old near ε from the start
    )
    args = ppo_clip.Args(
        update_epochs=3, num_minibatches=2, ent_coef=0.01, vf_coef=0.5, clip_coef=0.2, clip_vloss=clip_vloss
    )
    deterministic_minibatches(monkeypatch)
    seen = watch_losses(ppo_clip, agent, monkeypatch)
    metrics = call_update(ppo_clip, agent, batch, args)
    assert len(seen) == 3 * 2
    value_clip_mattered = False
    for k, (loss, then, _) in enumerate(seen):
        mb = torch.arange(32).tensor_split(2)[k % 2]
        with torch.no_grad():
            dist = then.dist(batch.obs[mb])
            r = torch.exp(dist.log_prob(batch.actions[mb]) - batch.logprobs[mb])
            a = normalised(batch.advantages[mb])
            value = value_term(then, batch, mb, 0.2 if clip_vloss else None)
            rest = -args.ent_coef * dist.entropy().mean() + args.vf_coef * value
            expected = -clipped_objective(r, a, 0.2).mean() + rest
            unclipped = -(r * a).mean() + rest
            value_clip_mattered |= abs(value_term(then, batch, mb, 0.2) - value_term(then, batch, mb)) > 1e-3
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
        assert abs(unclipped - expected) > 1e-3, "the clip must be active at every step of this test"
    assert value_clip_mattered, "the critic's clip must be active at some step of this test"
    with torch.no_grad():  # the whole batch, after the update
        r = torch.exp(agent.dist(batch.obs).log_prob(batch.actions) - batch.logprobs)
        a = normalised(batch.advantages)
    torch.testing.assert_close(metrics["losses/policy_loss"], -clipped_objective(r, a, 0.2).mean())
    assert metrics["losses/clipfrac"].item() == pytest.approx(((r - 1).abs() > 0.2).double().mean().item())
    assert clipped_objective(r, a, 0.2).mean() != (r * a).mean() and 0 < ((r - 1).abs() > 0.2).sum() < 32


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


def test_clip_range_is_symmetric():
    """With ε = 0.2, r·Â is capped at 1.2·Â for Â > 0 and at 0.8·Â for Â < 0, and left alone inside [0.8, 1.2]."""
    ratio = torch.tensor([0.5, 0.9, 1.1, 1.5, 0.5, 0.9, 1.1, 1.5])
    advantages = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
    expected = torch.tensor([0.5, 0.9, 1.1, 1.2, -0.8, -0.9, -1.1, -1.5])
    torch.testing.assert_close(ppo_clip.clipped_surrogate(ratio, advantages, 0.2), expected)


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


def test_target_kl_stops_the_epochs_not_the_training(in_tmp, monkeypatch):
    """ppo_clip with a tiny --target-kl: the approximate KL of the first epoch's last minibatch exceeds it, so each
    update stops after one epoch of num_minibatches steps, and training goes on to the next batch."""
    overrides = dict(env_id="ProbeBandit-v0", total_timesteps=256, update_epochs=4, num_minibatches=4)
    free = train(ppo_clip, monkeypatch, **overrides)
    stopped = train(ppo_clip, monkeypatch, target_kl=1e-9, **overrides)
    assert free.steps == 2 * 4 * 4
    assert stopped.steps == 2 * 4
    assert len(stopped.scalars["losses/kl"]) == 2 and len(stopped.batches) == 2


# ---- ppo_kl: the KL penalty against π_old, and β's rule


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,))], ids=["discrete", "box"])
def test_minibatch_of_the_batch_distribution_is_the_minibatch_distribution(space):
    """ppo_kl's π_old on a minibatch, cut from the batch's distribution, is the minibatch's forward pass."""
    agent = ppo_kl.Agent(4, space)
    obs, mb = torch.randn(16, 4), torch.tensor([3, 0, 7, 7, 12])
    with torch.no_grad():
        cut, direct = ppo_kl.minibatch_of(agent.dist(obs), mb), agent.dist(obs[mb])
        actions = direct.sample()
        torch.testing.assert_close(cut.log_prob(actions), direct.log_prob(actions))
        torch.testing.assert_close(torch.distributions.kl_divergence(cut, direct), torch.zeros(5), atol=1e-6, rtol=0)


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


@pytest.mark.parametrize(
    "kl, factor", [(0.02, 2.0), (0.005, 0.5), (0.01, 1.0), (0.0151, 2.0), (0.0066, 0.5), (0.0149, 1.0)]
)
def test_beta_rule(kl, factor):
    assert ppo_kl.update_beta(0.7, kl, 0.01) == 0.7 * factor


@pytest.mark.parametrize("adapt", [True, False])
def test_logged_beta_follows_the_rule(in_tmp, adapt):
    # lr 0.01 (not the default 3e-4) moves the policy enough in 8 small batches for the KL to cross both thresholds.
    args = tiny_args(ppo_kl, total_timesteps=1024, init_beta=0.3, adapt_beta=adapt, target_kl=0.003, learning_rate=0.01)
    ppo_kl.main(args)
    scalars = read_scalars(only_run())
    betas, kls = scalars["charts/beta"], scalars["losses/kl"]
    assert len(betas) == len(kls) == 8 and betas[0] == pytest.approx(0.3)
    factors = []
    for beta, d, next_beta in zip(betas, kls, betas[1:], strict=False):
        expected = 1.0 if not adapt else 2.0 if d > 1.5 * 0.003 else 0.5 if d < 0.003 / 1.5 else 1.0
        assert next_beta == pytest.approx(beta * expected, rel=1e-6)
        factors.append(expected)
    if adapt:
        assert set(factors) == {0.5, 1.0, 2.0}, "the test should see β halved, kept and doubled"


@pytest.mark.parametrize("target_kl, betas", [(1e-6, [1.0, 2.0, 4.0]), (10.0, [1.0, 0.5, 0.25])])
def test_beta_grows_when_the_kl_overshoots_and_shrinks_when_it_undershoots(in_tmp, monkeypatch, target_kl, betas):
    run = train(ppo_kl, monkeypatch, env_id="ProbeBandit-v0", total_timesteps=3 * 128, target_kl=target_kl)
    assert run.scalars["charts/beta"] == betas


# ---- All five: one update moves the policy the right way, and only where it should


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


def test_only_the_normalised_advantages_reach_the_update(script):
    """Every script weighs its log-probabilities or ratios with Â normalised to mean 0 and std 1 over the batch (the
    PPO scripts: over each minibatch). So the same batch with Â replaced by 3 + 5·Â, from the same start and seed,
    ends at the same parameters and logs the same figures. Â only scaled, only centred, or left as it is would pull π
    elsewhere on the shifted batch, or log another policy loss."""
    ends = []
    for shift, scale in ((0.0, 1.0), (3.0, 5.0)):
        agent, batch = fixed_batch(script, continuous=True, n=64)
        batch = batch._replace(advantages=shift + scale * batch.advantages)
        torch.manual_seed(1)
        metrics = call_update(script, agent, batch, tiny_args(script), beta=1.0)
        ends.append((agent.state_dict(), {key: float(value) for key, value in metrics.items()}))
    (weights, metrics), (shifted_weights, shifted_metrics) = ends
    torch.testing.assert_close(shifted_weights, weights, rtol=1e-6, atol=1e-9)
    assert shifted_metrics == pytest.approx(metrics, rel=1e-6, abs=1e-9)


def test_update_logs_the_policy_loss_and_the_kl_of_the_new_policy(script):
    """Over the whole batch, at the new θ, with Â (of mean 2 here) normalised over the batch: the policy loss each
    script logs is its own objective's negative, pg's −Ê[log πθ(a|s)·Â], npg's and trpo's −Ê[r·Â], ppo_clip's
    −Ê[min(r·Â, clip(r, 1 − ε, 1 + ε)·Â)] and ppo_kl's −Ê[r·Â − β·KL(π_old ‖ πθ)]; and the KL it logs is the exact
    Ê[KL(π_old ‖ πθ)], which the update has made positive."""
    agent, batch = fixed_batch(script, continuous=True, n=64)
    batch, args, beta = batch._replace(advantages=batch.advantages + 2), tiny_args(script), 2.0
    metrics = call_update(script, agent, batch, args, beta=beta)
    with torch.no_grad():
        dist = agent.dist(batch.obs)
        logprobs, a = dist.log_prob(batch.actions), normalised(batch.advantages)
        r, kl = torch.exp(logprobs - batch.logprobs), kl_divergence(batch.old_dist, dist)
    objective = {"pg": logprobs * a, "npg": r * a, "trpo": r * a, "ppo_kl": r * a - beta * kl}
    objective["ppo_clip"] = clipped_objective(r, a, getattr(args, "clip_coef", 0.2))
    assert metrics["losses/policy_loss"].item() == pytest.approx(-objective[script.__name__].mean().item(), rel=1e-9)
    assert metrics["losses/kl"].item() == pytest.approx(kl.mean().item(), rel=1e-9) and kl.mean() > 1e-6


def test_one_update_moves_the_critic_toward_its_targets(script):
    """R̂ = V(s) + 3 + noise on a batch of 64 states, at a critic's rate of 0.01: after one update, whatever the method,
    the critic's loss Ê[(V(s) − R̂)²] on the batch is less than half what it was, and the update logs that loss, not
    the one before it."""
    agent, batch = fixed_batch(script, continuous=True, n=64)
    batch = batch._replace(returns=batch.values + 3 + 0.5 * torch.randn(64, dtype=torch.float64))
    rate = "vf_learning_rate" if hasattr(script.Args, "vf_learning_rate") else "learning_rate"
    with torch.no_grad():
        before = ((agent.value(batch.obs) - batch.returns) ** 2).mean().item()
    metrics = call_update(script, agent, batch, tiny_args(script, **{rate: 0.01}), beta=1.0)
    with torch.no_grad():
        after = ((agent.value(batch.obs) - batch.returns) ** 2).mean().item()
    assert after < 0.5 * before, (before, after)
    assert metrics["losses/value_loss"].item() == pytest.approx(after, rel=1e-9)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_zero_advantages_leave_the_policy_unchanged(script, in_tmp, monkeypatch, env_id):
    monkeypatch.setattr(script, "compute_gae", lambda rewards, *_: torch.zeros_like(rewards))
    script.main(tiny_args(script, env_id=env_id, total_timesteps=256, num_steps=64, save_model=True))
    weights = saved_checkpoint()["agent"]
    # ppo_kl's Categorical KL has a zero gradient at θ_old only up to round-off (Σ p_old is 1 ± an ulp), which Adam
    # scales up into steps of about 5e-4 here; the code before the rewrite drifted by exactly as much.
    tolerance = 1e-3 if (script.__name__, env_id) == ("ppo_kl", "CartPole-v1") else 0.0
    for name, weight in initial_agent(script, env_id).state_dict().items():
        if not name.startswith("critic."):
            assert torch.allclose(weights[name], weight, rtol=0, atol=tolerance), name


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_non_finite_loss_skips_the_update(script, in_tmp, monkeypatch, capsys, env_id):
    """NaN advantages make every loss NaN: each update is skipped, so the weights stay the initial ones, a warning is
    printed and the skips are counted in tensorboard."""
    monkeypatch.setattr(script, "compute_gae", lambda rewards, *_: torch.full_like(rewards, torch.nan))
    script.main(tiny_args(script, env_id=env_id, total_timesteps=256, num_steps=64, save_model=True))
    weights = saved_checkpoint()["agent"]
    for name, weight in initial_agent(script, env_id).state_dict().items():
        assert torch.isfinite(weights[name]).all() and torch.equal(weights[name], weight), name
    assert "updates skipped: non-finite loss or gradient" in capsys.readouterr().out
    assert read_scalars(only_run())["charts/skipped_updates"][-1] > 0


@pytest.mark.parametrize("script", ["pg", "npg", "trpo"], indirect=True)  # PPO's minibatches hold 2 samples at least
def test_batch_of_one(script, in_tmp):
    """One sample: its advantage normalises to 0 instead of NaN (the std of one sample is NaN)."""
    script.main(tiny_args(script, total_timesteps=8, num_envs=1, num_steps=1, num_minibatches=1, save_model=True))
    assert all(torch.isfinite(w).all() for w in saved_checkpoint()["agent"].values())
    assert read_scalars(only_run())["charts/skipped_updates"][-1] == 0
