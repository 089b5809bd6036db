"""npg.py and trpo.py: the Fisher-vector product, conjugate gradient, the natural step and the line search, each
checked against ground truth (an explicit Hessian, a direct solve, a measured KL)."""

from functools import partial

import gymnasium as gym
import pytest
import torch
from conftest import only_run, read_scalars, tiny_args
from torch import nn
from torch.distributions import Categorical, Independent, Normal, kl_divergence

import npg
import trpo


@pytest.fixture(params=[npg, trpo], ids=["npg", "trpo"])
def script(request):
    return request.param


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
    """v ↦ F·v at the agent's current θ, with ∇θ KL built once, as main builds it."""
    params = agent.policy_parameters()
    kl = kl_divergence(old_dist, agent.dist(obs)).mean()
    return partial(script.fisher_vector_product, script.flat_grad(kl, params, create_graph=True), params)


def objective_of(script, agent, obs, actions, logprobs, advantages, old_dist):
    """() ↦ (L(θ), Ê[KL(π_old ‖ πθ)]) at the agent's current θ, as the script's update builds it."""

    def objective():
        dist = agent.dist(obs)
        return script.surrogate(dist.log_prob(actions), logprobs, advantages), kl_divergence(old_dist, dist).mean()

    return objective


def natural_step(script, agent, obs, actions, logprobs, advantages, old_dist, delta, iters=10, damping=0.1):
    """The script's natural gradient step from the agent's current θ, wired as update wires it."""
    params = agent.policy_parameters()
    surrogate, kl = objective_of(script, agent, obs, actions, logprobs, advantages, old_dist)()
    g = script.flat_grad(surrogate, params, retain_graph=True)
    fvp = partial(script.fisher_vector_product, script.flat_grad(kl, params, create_graph=True), params)
    return script.natural_gradient_step(g, fvp, delta, iters, damping)


def surrogate_of(script, agent, obs, actions, logprobs, advantages):
    with torch.no_grad():
        return script.surrogate(agent.dist(obs).log_prob(actions), logprobs, advantages)


@pytest.mark.parametrize("continuous", [False, True])
def test_fvp_equals_explicit_kl_hessian(script, continuous):
    agent, obs, _, _, _, old_dist = small_policy(script, continuous)
    theta = torch.nn.utils.parameters_to_vector(agent.policy_parameters()).detach()
    hessian = torch.autograd.functional.hessian(mean_kl_of_flat(agent, obs, old_dist), theta)
    assert hessian.shape == (len(theta), len(theta)) and hessian.abs().max() > 1e-3
    fvp = fvp_of(script, agent, obs, old_dist)
    for seed in range(3):  # the one ∇θ KL serves every product
        v = torch.randn(len(theta), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), hessian @ v, rtol=1e-5, atol=1e-10)


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
def test_conjugate_gradient_matches_direct_solve(script, n):
    generator = torch.Generator().manual_seed(n)
    q = torch.randn(n, n, dtype=torch.float64, generator=generator)
    a = q @ q.T / n + torch.eye(n, dtype=torch.float64)  # symmetric positive definite, condition number ≈ 5
    b = torch.randn(n, dtype=torch.float64, generator=generator)
    x, residual = script.conjugate_gradient(lambda v: a @ v, b, iters=n, tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    assert residual < 1e-8


def test_conjugate_gradient_of_zero_is_zero(script):
    a = torch.eye(4, dtype=torch.float64) * 3
    x, residual = script.conjugate_gradient(lambda v: a @ v, torch.zeros(4, dtype=torch.float64), iters=10)
    assert torch.equal(x, torch.zeros(4, dtype=torch.float64)) and residual == 0


@pytest.mark.parametrize("continuous", [False, True])
def test_natural_step_meets_the_kl_constraint(script, continuous):
    """½·sᵀFs = δ, with F the explicit Hessian of the KL, and the KL measured after the step is δ to second order: its
    error shrinks with δ."""
    agent, obs, actions, logprobs, advantages, old_dist = small_policy(script, continuous)
    params = agent.policy_parameters()
    theta_old = torch.nn.utils.parameters_to_vector(params).detach()
    fisher = torch.autograd.functional.hessian(mean_kl_of_flat(agent, obs, old_dist), theta_old)  # not the script's F·v
    errors = []
    for delta in (1e-2, 1e-4):
        step, residual = natural_step(script, agent, obs, actions, logprobs, advantages, old_dist, delta, 20)
        s_F_s = step @ fisher @ step
        assert 0.5 * s_F_s.item() == pytest.approx(delta, rel=1e-9)
        script.set_flat_params(params, theta_old + step)
        with torch.no_grad():
            errors.append(abs(kl_divergence(old_dist, agent.dist(obs)).mean().item() / delta - 1))
        script.set_flat_params(params, theta_old)
    assert errors[0] < 0.25 and errors[1] < 0.05 and errors[1] < errors[0] / 4


def test_natural_step_ascends_the_surrogate(script):
    agent, obs, actions, logprobs, advantages, old_dist = small_policy(script, continuous=False)
    params = agent.policy_parameters()
    theta_old = torch.nn.utils.parameters_to_vector(params).detach()
    step, _ = natural_step(script, agent, obs, actions, logprobs, advantages, old_dist, 1e-4, 20)
    before = surrogate_of(script, agent, obs, actions, logprobs, advantages)
    script.set_flat_params(params, theta_old + step)
    assert surrogate_of(script, agent, obs, actions, logprobs, advantages) > before


@pytest.mark.parametrize("continuous", [False, True])
def test_zero_gradient_gives_zero_step(script, continuous):
    agent, obs, actions, logprobs, advantages, old_dist = small_policy(script, continuous)
    zeros = torch.zeros_like(advantages)
    step, residual = natural_step(script, agent, obs, actions, logprobs, zeros, old_dist, 0.01)
    assert torch.equal(step, torch.zeros_like(step)) and residual == 0


EXTRA_KEYS = {"charts/cg_residual"}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_logged_kl_and_extra_keys(script, in_tmp, env_id):
    """npg's KL sits near δ; trpo's is never above it. Both log their diagnostics."""
    script.main(tiny_args(script, env_id=env_id, total_timesteps=1024, num_envs=2, num_steps=128))
    scalars = read_scalars(only_run())
    keys = EXTRA_KEYS | (
        {"charts/line_search_steps", "charts/line_search_accepted"} if script.__name__ == "trpo" else set()
    )
    assert keys <= set(scalars)
    kls = torch.tensor(scalars["losses/kl"])
    assert len(kls) == 4 and torch.isfinite(kls).all()
    if script.__name__ == "npg":
        assert (kls > 0.3 * 0.01).all() and (kls < 2.0 * 0.01).all()
    else:
        assert (kls <= 0.01).all()
        accepted = torch.tensor(scalars["charts/line_search_accepted"])
        assert ((kls > 0) == (accepted > 0)).all() and accepted.sum() >= 3, "most steps are accepted here"


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
        accepted, tries, surrogate, kl_found = trpo.line_search(
            params, theta_old, 2 * step, objective, before, delta, 0.8, 10
        )
        kl = kl_divergence(old_dist, agent.dist(obs)).mean()
    assert accepted and tries > 1
    surrogate_there, kl_there = objective()
    assert torch.equal(surrogate, surrogate_there) and torch.equal(kl_found, kl_there), "L and the KL where θ ends"
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
        accepted, tries, surrogate, kl = trpo.line_search(params, theta_old, step, objective, before, delta, 0.8, 10)
    assert not accepted and tries == 10
    assert surrogate == before and kl == 0, "θ_old's L, and a KL of 0"
    assert all(torch.equal(p, q) for p, q in zip(params, saved, strict=True))
