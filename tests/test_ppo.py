"""ppo_clip.py and ppo_kl.py: the clipped objective, π_old on a minibatch, the logged keys, and the β rule."""

import shutil

import gymnasium as gym
import pytest
import torch
from conftest import only_run, read_scalars, tiny_args

import ppo_clip
import ppo_kl


@pytest.fixture(params=[ppo_clip, ppo_kl], ids=["ppo_clip", "ppo_kl"])
def script(request):
    return request.param


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


@pytest.mark.parametrize(
    "kl, factor", [(0.02, 2.0), (0.005, 0.5), (0.01, 1.0), (0.0151, 2.0), (0.0066, 0.5), (0.0149, 1.0)]
)
def test_beta_rule(kl, factor):
    assert ppo_kl.update_beta(0.7, kl, 0.01) == 0.7 * factor


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


def test_clipfrac_is_logged_by_ppo_clip_only(in_tmp):
    for script in (ppo_clip, ppo_kl):
        script.main(tiny_args(script, total_timesteps=256, num_steps=64))
        fractions = read_scalars(only_run()).get("losses/clipfrac")
        assert (fractions is not None) == (script is ppo_clip)
        assert fractions is None or all(0 <= f <= 1 for f in fractions)
        shutil.rmtree("runs")


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
