"""The wiring of main: what it passes between rollout, compute_gae and the update, what it logs, and that a seed
repeats a run.

The math functions have their own tests; these catch a correct function called with the wrong inputs. Each runs main
for one or two small batches, watching it through spies on the module's own functions (conftest.train)."""

import importlib
import inspect
import shutil

import gymnasium as gym
import pytest
import torch
from conftest import SCRIPTS, only_run, read_scalars, tiny_args, train, train_and_load
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.distributions import kl_divergence

import npg
import ppo_clip
import ppo_kl
import trpo


def test_gae_sees_the_true_successor_of_every_step(script, in_tmp, monkeypatch):
    """Counter-v0's obs is [episode id, step]; its episodes end by termination or by the 12-step time limit. main must
    hand compute_gae V(s') of the true successor s' (the final obs where an episode ended), 0 after a termination only,
    and the dones that stop Â at the end of each episode: there Â_t is its own TD error; and the run's own γ and λ, in
    that order (γ ≠ λ here, and neither is a default)."""
    run = train(script, monkeypatch, env_id="Counter-v0", num_envs=3, num_steps=60, total_timesteps=180, gamma=0.9,
                gae_lambda=0.6)  # fmt: skip
    data = run.batches[0]
    obs, true_next_obs, rewards, terminations, dones = (
        data.obs,
        data.next_obs,
        data.rewards,
        data.terminations,
        data.dones,
    )
    ((gae_rewards, values, next_values, gae_dones, gamma, gae_lambda, advantages),) = run.gae_calls
    assert (gamma, gae_lambda) == (0.9, 0.6)
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


def test_each_rollout_continues_where_the_last_one_ended(script, in_tmp, monkeypatch):
    """Counter-v0's obs is [episode id, step]: the second rollout starts from the first one's last observation, where
    the envs are, not from the observation the run started with."""
    run = train(script, monkeypatch, env_id="Counter-v0", num_envs=2, num_steps=5, total_timesteps=20)
    first, second = run.batches
    assert torch.equal(second.obs[0], first.last_obs) and not torch.equal(second.obs[0], first.obs[0])


# Each script's optimizers, by the name update gives them: the parameters each one steps (θ: the policy's; V: the
# critic's), the flag of its learning rate, and its Adam ε. npg's and trpo's θ is in none: the natural step moves it.
OPTIMIZERS = {
    "pg": {"policy_optimizer": ("θ", "learning_rate", 1e-8), "value_optimizer": ("V", "vf_learning_rate", 1e-8)},
    "npg": {"value_optimizer": ("V", "vf_learning_rate", 1e-8)},
    "trpo": {"value_optimizer": ("V", "vf_learning_rate", 1e-8)},
    "ppo_clip": {"optimizer": ("θ and V", "learning_rate", 1e-5)},
    "ppo_kl": {"optimizer": ("θ and V", "learning_rate", 1e-5)},
}
RATES = {"learning_rate": 0.01, "vf_learning_rate": 0.002}  # neither a default, nor each other
ANNEAL = [(name, anneal) for name in SCRIPTS for anneal in
          ((True, False) if hasattr(importlib.import_module(name).Args, "anneal_lr") else (None,))]  # fmt: skip


@pytest.mark.parametrize("name, anneal", ANNEAL)
def test_each_optimizer_steps_its_own_parameters_at_its_own_rate(name, anneal, in_tmp, monkeypatch):
    """4 iterations on Pendulum-v1 (θ holds log σ), with rates that differ per optimizer: each optimizer that update is
    handed is an Adam over exactly its parameters, each once, and steps; none holds a parameter another holds, and
    none is left out but npg's and trpo's θ. The rate of iteration i of N is --learning-rate · (1 − (i − 1)/N) for
    the optimizers at --learning-rate under --anneal-lr (the first at the rate itself, none at 0), and the flag's
    own rate for every other, at every iteration; the scripts that anneal log the annealed rate."""
    script = importlib.import_module(name)
    seen, stepped, update, guarded_step = [], set(), script.update, script.guarded_step

    def update_spy(*args, **kwargs):
        arguments = inspect.signature(update).bind(*args, **kwargs).arguments
        optimizers = {key: value for key, value in arguments.items() if isinstance(value, torch.optim.Optimizer)}
        seen.append((arguments["agent"], optimizers, {key: [g["lr"] for g in o.param_groups] for key, o in
                                                       optimizers.items()}))  # fmt: skip
        return update(*args, **kwargs)

    def guarded_step_spy(optimizer, *args, **kwargs):
        stepped.add(optimizer)
        return guarded_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(script, "update", update_spy)
    monkeypatch.setattr(script, "guarded_step", guarded_step_spy)
    overrides = {flag: rate for flag, rate in RATES.items() if hasattr(script.Args, flag)}
    overrides |= {} if anneal is None else {"anneal_lr": anneal}
    run = train(script, monkeypatch, env_id="Pendulum-v1", num_steps=16, total_timesteps=4 * 2 * 16, **overrides)
    agent, optimizers, _ = seen[0]
    theta, critic = agent.policy_parameters(), list(agent.critic.parameters())
    assert agent is run.agent and any(p is agent.actor_logstd for p in theta)
    parameters = {"θ": theta, "V": critic, "θ and V": theta + critic}
    assert len(seen) == 4 and all(s[0] is agent and s[1] == optimizers for s in seen)
    assert set(optimizers) == set(OPTIMIZERS[name]) and stepped == set(optimizers.values())
    held = [p for optimizer in optimizers.values() for group in optimizer.param_groups for p in group["params"]]
    assert len({id(p) for p in held}) == len(held), "a parameter in two optimizers, or twice in one"
    left_out = {id(p) for p in agent.parameters() if p.requires_grad} - {id(p) for p in held}
    assert left_out == ({id(p) for p in theta} if name in ("npg", "trpo") else set())
    for key, (which, flag, eps) in OPTIMIZERS[name].items():
        optimizer = optimizers[key]
        assert type(optimizer) is torch.optim.Adam and all(g["eps"] == eps for g in optimizer.param_groups), key
        assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in parameters[which]}, key
        rate, annealed = overrides[flag], anneal and flag == "learning_rate"
        expected = [rate * (1 - i / 4) if annealed else rate for i in range(4)]
        for group in range(len(optimizer.param_groups)):
            assert [lrs[key][group] for _, _, lrs in seen] == pytest.approx(expected, rel=1e-12), (key, group)
        if flag == "learning_rate":
            assert run.scalars["charts/learning_rate"] == pytest.approx(expected, rel=1e-6)
    assert ("charts/learning_rate" in run.scalars) == (anneal is not None)


def test_zero_advantages_leave_the_critic_unchanged(script, in_tmp, monkeypatch):
    """With Â = 0 the critic's targets R̂ = Â + V are its own values, so its loss has a zero gradient."""
    monkeypatch.setattr(script, "compute_gae", lambda rewards, *_: torch.zeros_like(rewards))
    run = train(script, monkeypatch, env_id="ProbeObsReward-v0")
    with torch.no_grad():
        assert run.initial.value(torch.tensor([[1.0], [-1.0]])).abs().min() > 0.01  # a target of 0 would move it
    after = run.agent.critic.state_dict()
    for name, before in run.initial.critic.state_dict().items():
        assert torch.equal(before, after[name]), name


# ---- What main logs


REQUIRED_KEYS = {
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/SPS",
    "losses/value_loss",
    "losses/policy_loss",
    "losses/entropy",
    "losses/explained_variance",
    "losses/kl",
}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_short_run_writes_tensorboard_keys(script, in_tmp, env_id):
    script.main(tiny_args(script, env_id=env_id, total_timesteps=512, num_steps=128))
    run = only_run()
    assert run.name.startswith(f"{env_id}__{script.__name__}__1__")
    assert REQUIRED_KEYS <= set(read_scalars(run))
    events = EventAccumulator(str(run))
    events.Reload()
    assert "hyperparameters" in {tag.split("/")[0] for tag in events.Tags()["tensors"]}


EXTRA_KEYS = {"charts/cg_residual"}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("script", ["npg", "trpo"], indirect=True)
def test_logged_kl_and_extra_keys(script, in_tmp, env_id):
    """npg's KL is δ at most, to second order (½·sᵀ(F + λI)s = δ, and λ takes a share), and near it at times; trpo's is
    never above δ. Both log their diagnostics."""
    script.main(tiny_args(script, env_id=env_id, total_timesteps=1024, num_envs=2, num_steps=128))
    scalars = read_scalars(only_run())
    keys = EXTRA_KEYS | (
        {"charts/line_search_steps", "charts/line_search_accepted"} if script.__name__ == "trpo" else set()
    )
    assert keys <= set(scalars)
    kls = torch.tensor(scalars["losses/kl"])
    assert len(kls) == 4 and torch.isfinite(kls).all()
    delta = script.default_target_kl(gym.make(env_id).action_space)  # CartPole: npg 0.01, trpo 0.02; Pendulum: 0.01
    if script.__name__ == "npg":
        assert (kls < 1.5 * delta).all() and kls.max() > 0.5 * delta
    else:
        assert (kls <= delta).all()
        accepted = torch.tensor(scalars["charts/line_search_accepted"])
        assert ((kls > 0) == (accepted > 0)).all() and accepted.sum() >= 3, "most steps are accepted here"


def test_clipfrac_is_logged_by_ppo_clip_only(in_tmp):
    for script in (ppo_clip, ppo_kl):
        script.main(tiny_args(script, total_timesteps=256, num_steps=64))
        fractions = read_scalars(only_run()).get("losses/clipfrac")
        assert (fractions is not None) == (script is ppo_clip)
        assert fractions is None or all(0 <= f <= 1 for f in fractions)
        shutil.rmtree("runs")


# ---- Seeds


@pytest.mark.parametrize("env_id", ["Pendulum-v1"])
def test_same_seed_same_run(script, in_tmp, env_id):
    """The same returns, weights, normaliser statistics and logs from the same seed; other weights from another. On
    Pendulum-v1, where the normaliser is on and the Gaussian samples; benchmarks/fingerprint.py covers CartPole-v1."""
    first, returns_first, logs_first = train_and_load(script, env_id=env_id, seed=3)
    second, returns_second, logs_second = train_and_load(script, env_id=env_id, seed=3)
    other, *_ = train_and_load(script, env_id=env_id, seed=4, total_timesteps=256)  # one update is enough to differ
    assert returns_first == returns_second and len(returns_first) > 0
    assert logs_first == logs_second and len(logs_first["losses/kl"]) == 2
    for name, weight in first["agent"].items():
        assert torch.equal(weight, second["agent"][name]), name
    assert not all(torch.equal(w, other["agent"][name]) for name, w in first["agent"].items())
    for name, stats in first["normalizer"].items():
        assert all(torch.equal(stat, second["normalizer"][name][key]) for key, stat in stats.items()), name


def test_fused_adam_trains_as_the_per_tensor_adam_within_float_tolerance(script, in_tmp, monkeypatch):
    """Every Adam of main is fused (one kernel over all its parameters), a change of rounding only: a fixed-seed run
    of a few updates ends with the weights that torch's per-tensor Adam, its default on a CPU, gives, to float
    tolerance (a different Adam, e.g. another ε or no bias correction, would move them by far more)."""
    adam, made = torch.optim.Adam, []

    def recording(params, **kwargs):
        made.append(kwargs)
        return adam(params, **kwargs)

    def per_tensor(params, **kwargs):
        return adam(params, **{**kwargs, "fused": False, "foreach": False})

    runs = []
    for optimizer in (recording, per_tensor):
        monkeypatch.setattr(torch.optim, "Adam", optimizer)
        runs.append(train(script, monkeypatch, env_id="Pendulum-v1", total_timesteps=3 * 2 * 64))
    assert made and all(kwargs.get("fused") for kwargs in made)
    fused, per_tensor_run = (dict(run.agent.named_parameters()) for run in runs)
    initial = dict(runs[1].initial.named_parameters())
    for name, p in per_tensor_run.items():
        torch.testing.assert_close(fused[name], p, rtol=1e-4, atol=1e-5, msg=name)
    moved = max((p - initial[name]).abs().max().item() for name, p in per_tensor_run.items() if "critic" in name)
    assert moved > 1e-3, "the critic's Adam steps moved it by far more than the tolerance"


def double_backward_fvp(agent, obs):
    """v ↦ F·v as npg and trpo computed it before their forward-mode product: ∇θ((∇θ KL)ᵀv), with ∇θ KL built once
    with create_graph=True from a KL whose π_old is detached."""
    params = agent.policy_parameters()
    with torch.no_grad():
        old_dist = agent.dist(obs)
    grad_kl = torch.cat([g.flatten() for g in torch.autograd.grad(kl_divergence(old_dist, agent.dist(obs)).mean(),
                                                                    params, create_graph=True)])  # fmt: skip
    return lambda v: torch.cat([g.flatten() for g in torch.autograd.grad(grad_kl @ v, params, retain_graph=True)])


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1", "Pixel-v0", "BoxPixel-v0"])
@pytest.mark.parametrize("module", [npg, trpo], ids=["npg", "trpo"])
def test_forward_mode_fvp_trains_as_the_double_backward_within_float_tolerance(module, env_id, in_tmp, monkeypatch):
    """fisher_vector_product is J·v forward, Jᵀ·(H·J·v) backward, a change of rounding only: on a float32 batch its
    products equal the double-backward ones to float tolerance, MLP and NatureCNN, Gaussian and Categorical, and a
    fixed-seed run of a few updates ends with the policy the double-backward product gives."""
    runs, forward_mode = [], module.fisher_vector_product
    for fvp in (forward_mode, double_backward_fvp):
        monkeypatch.setattr(module, "fisher_vector_product", fvp)
        runs.append(train(module, monkeypatch, env_id=env_id, num_steps=16, total_timesteps=3 * 2 * 16))
    new, old = (dict(run.agent.named_parameters()) for run in runs)
    initial = dict(runs[1].initial.named_parameters())
    for name, p in old.items():
        torch.testing.assert_close(new[name], p, rtol=1e-4, atol=1e-5, msg=name)
    moved = max((p - initial[name]).abs().max().item() for name, p in old.items() if not name.startswith("critic."))
    assert moved > 1e-3, "the natural steps moved π by far more than the tolerance"
    agent, obs = runs[0].agent, runs[0].batches[-1].obs.flatten(0, 1)
    v = torch.randn(sum(p.numel() for p in agent.policy_parameters()), generator=torch.Generator().manual_seed(0))
    products = [fvp(agent, obs)(v) for fvp in (forward_mode, double_backward_fvp)]
    assert not torch.equal(products[0], products[1]), "two computations, whose rounding differs"
    assert products[1].norm() > 0
    torch.testing.assert_close(products[0], products[1], rtol=1e-4, atol=1e-6 * products[1].norm().item())
