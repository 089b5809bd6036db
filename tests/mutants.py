"""Planted bugs, and whether the behavioural tests catch them: a mutation round that reruns with one command.

    python tests/mutants.py                  # the suite as it is, then every mutant below, one at a time: about 40 min
    python tests/mutants.py --only "GAE"     # those whose name contains GAE
    python tests/mutants.py --list           # the names, and in how many scripts each one is planted
    python tests/mutants.py --only "GAE" "CG" --full   # every test that fails on them, not the first few

Each mutant is a piece of text and its buggy replacement. It is planted in a copy of the repository, in every script
whose text holds it (the plumbing and the shared math are one text in all five, so a shared bug is planted in all five,
as tests/test_shape.py would make a developer write it), and the fast suite runs there without tests/test_shape.py and
tests/test_style.py, which read the files' text rather than what they do. A mutant is killed when a test fails (or the
suite runs past --timeout); the others survive and are printed at the end. Not part of CI: 46 mutants took 25 min here.

The list holds the bugs of issue 27's round (the places it named), and a round of this repository's own: realistic
bugs in the rollout, GAE, the normaliser, evaluation, the natural step, the line search, both PPO objectives and main.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["pg", "npg", "trpo", "ppo_clip", "ppo_kl"]
TEXT_TESTS = ["tests/test_shape.py", "tests/test_style.py"]  # they read the text; the round asks what the code does

# name: (the text, what the bug makes of it)
MUTANTS = {
    # Issue 27's places.
    "pg: Â scaled by its std, not centred": (
        "advantages = (advantages - advantages.mean()) / (advantages.std().nan_to_num() + 1e-8)",
        "advantages = advantages / (advantages.std().nan_to_num() + 1e-8)",
    ),
    "GAE: γ and λ swapped in make_batch": (
        "compute_gae(data.rewards, values, next_values, data.dones, gamma, gae_lambda)",
        "compute_gae(data.rewards, values, next_values, data.dones, gae_lambda, gamma)",
    ),
    "line search: first try α·s": (
        "set_flat_params(params, theta_old + backtrack_coef**j * step)",
        "set_flat_params(params, theta_old + backtrack_coef ** (j + 1) * step)",
    ),
    "guarded_step: clipping before backward": (
        "    loss.backward()\n    grad_norm = nn.utils.clip_grad_norm_(",
        "    grad_norm = nn.utils.clip_grad_norm_(",
    ),
    "learning-rate schedule one iteration ahead": (
        "(1.0 - (iteration - 1.0) / num_iterations)",
        "(1.0 - iteration / num_iterations)",
    ),
    "critic (pg, npg, trpo) regresses on Â": (
        "value_loss = ((agent.value(batch.obs[mb]) - batch.returns[mb]) ** 2).mean()",
        "value_loss = ((agent.value(batch.obs[mb]) - batch.advantages[mb]) ** 2).mean()",
    ),
    "critic (PPO) regresses on Â": (
        "value_loss = (new_values - batch.returns[mb]) ** 2",
        "value_loss = (new_values - batch.advantages[mb]) ** 2",
    ),
    "main: the next rollout starts again from the first observation": (
        "next_obs, global_step = data.last_obs, global_step + batch_size",
        "global_step = global_step + batch_size",
    ),
    "NatureCNN: second convolution with stride 1": (
        "nn.Conv2d(32, 64, 4, stride=2)",
        "nn.Conv2d(32, 64, 4, stride=1)",
    ),
    "Atari: the episode's score counts clipped rewards": (
        "return gym.wrappers.TimeLimit(gym.wrappers.FrameStackObservation(env, 4), 27_000)",
        "env = gym.wrappers.TransformReward(env, np.sign)\n"
        "    return gym.wrappers.TimeLimit(gym.wrappers.FrameStackObservation(env, 4), 27_000)",
    ),
    "PPO: minibatch Â scaled, not centred": (
        "mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)",
        "mb_advantages = mb_advantages / (mb_advantages.std() + 1e-8)",
    ),
    "make_batch: R̂ = Â + V(s_{t+1})": (
        "    returns = advantages + values\n",
        "    returns = advantages + next_values\n",
    ),
    # This repository's own round.
    "rollout: a truncation stored as a termination": (
        "normalizer.reward(reward, done), terminated, done",
        "normalizer.reward(reward, done), done, done",
    ),
    "rollout: info['final_obs'] ignored": (
        'true_next_obs[t, done] = normalizer.obs_tensor(np.stack(info["final_obs"][done]), device, update=False)',
        "pass",
    ),
    "rollout: final_obs counted in the statistics": (
        'np.stack(info["final_obs"][done]), device, update=False)',
        'np.stack(info["final_obs"][done]), device, update=True)',
    ),
    "make_batch: no bootstrap after a truncation": (
        "next_values = next_values * (1.0 - data.terminations)",
        "next_values = next_values * (1.0 - data.dones)",
    ),
    "make_batch: GAE runs across episode ends": (
        "compute_gae(data.rewards, values, next_values, data.dones,",
        "compute_gae(data.rewards, values, next_values, data.terminations,",
    ),
    "GAE: δ undiscounted": (
        "delta = rewards[t] + gamma * next_values[t] - values[t]",
        "delta = rewards[t] + next_values[t] - values[t]",
    ),
    "normaliser: the discounted return is not reset at an episode's end": (
        "            self.discounted_return[done] = 0.0\n",
        "",
    ),
    "normaliser: rewards divided by the variance, not the std": (
        'np.clip(reward / np.sqrt(self.stats["return"].var + 1e-8), -10, 10)',
        'np.clip(reward / (self.stats["return"].var + 1e-8), -10, 10)',
    ),
    "evaluation: the sampled policy, not its mode": (
        "rollout(envs, agent, normalizer, next_obs, chunk, deterministic=True)",
        "rollout(envs, agent, normalizer, next_obs, chunk, deterministic=False)",
    ),
    "evaluation: the normaliser keeps learning": ("    normalizer.frozen = True\n", "    normalizer.frozen = False\n"),
    "CG: β inverted": ("p = r + (rr_new / rr) * p", "p = r + (rr / rr_new) * p"),
    "CG: x moves against p": ("        x += alpha * p\n", "        x -= alpha * p\n"),
    "natural step: √(δ / xᵀ(F + λI)x), without the 2": (
        "torch.sqrt(2 * target_kl / (x @ damped_fvp(x))",
        "torch.sqrt(target_kl / (x @ damped_fvp(x))",
    ),
    "δ's default: one δ whatever the dimensions": (
        "0.01 * action_space.shape[0] if isinstance",
        "0.02 if isinstance",
    ),
    "λ's default: one λ whatever the dimensions": (
        "0.1 * action_space.shape[0] if isinstance",
        "0.1 if isinstance",
    ),
    "the step sized by F, not F + λI": ("/ (x @ damped_fvp(x))", "/ (x @ fvp(x))"),
    "line search: the KL bound not checked": (
        "if kl <= target_kl and surrogate_new > surrogate_old:",
        "if surrogate_new > surrogate_old:",
    ),
    "line search: θ_old not restored when nothing is accepted": (
        "    set_flat_params(params, theta_old)\n    return False",
        "    return False",
    ),
    "F·v: log σ's block I, not 2·I": (
        '2 * chunks[name] if name == "actor_logstd"',
        'chunks[name] if name == "actor_logstd"',
    ),
    "F·v: the Categorical's H without −p·pᵀu": (
        "return probs * u - probs * (probs * u).sum(-1, keepdim=True)",
        "return probs * u",
    ),
    "F·v: summed over the states, not averaged": ("fisher_in_z(jv) / len(z)", "fisher_in_z(jv)"),
    "F: --fisher-subsample ignored": ("batch.obs[:: args.fisher_subsample]", "batch.obs"),
    "θ without the Gaussian's log σ": (
        'if not name.startswith("critic.")]',
        'if name.startswith(("actor.", "encoder."))]',
    ),
    "pg: the loss's sign flipped": (
        "policy_loss = -(agent.dist(batch.obs).log_prob(batch.actions) * advantages).mean()",
        "policy_loss = (agent.dist(batch.obs).log_prob(batch.actions) * advantages).mean()",
    ),
    "PPO: ratio inverted": (
        "logratio = dist.log_prob(batch.actions[mb]) - batch.logprobs[mb]",
        "logratio = batch.logprobs[mb] - dist.log_prob(batch.actions[mb])",
    ),
    "ppo_clip: max instead of min in the clipped objective": (
        "return torch.min(ratio * advantages, ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages)",
        "return torch.max(ratio * advantages, ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages)",
    ),
    "ppo_clip: early stop on a KL below the target": (
        "approx_kl > args.target_kl:",
        "approx_kl < args.target_kl:",
    ),
    "ppo_clip: --clip-vloss takes the smaller loss": (
        "value_loss = torch.max(value_loss, (clipped - batch.returns[mb]) ** 2)",
        "value_loss = torch.min(value_loss, (clipped - batch.returns[mb]) ** 2)",
    ),
    "PPO: entropy penalised, not rewarded": (
        "loss = policy_loss - args.ent_coef * entropy + args.vf_coef * value_loss",
        "loss = policy_loss + args.ent_coef * entropy + args.vf_coef * value_loss",
    ),
    "PPO: value loss without its ½": ("value_loss = 0.5 * value_loss.mean()", "value_loss = value_loss.mean()"),
    "ppo_kl: β's rule inverted": (
        "beta * 2 if kl > 1.5 * target_kl else beta / 2 if kl < target_kl / 1.5 else beta",
        "beta / 2 if kl > 1.5 * target_kl else beta * 2 if kl < target_kl / 1.5 else beta",
    ),
    "ppo_kl: the penalty's sign flipped": (
        "policy_loss = -(ratio * mb_advantages - beta * mb_kl).mean()",
        "policy_loss = -(ratio * mb_advantages + beta * mb_kl).mean()",
    ),
    "ppo_kl: β adapted from its initial value each time": (
        "beta = update_beta(beta, metrics",
        "beta = update_beta(args.init_beta, metrics",
    ),
    "guarded_step: no gradient clipping": (
        'for p in g["params"]], max_grad_norm)',
        'for p in g["params"]], math.inf)',
    ),
    "main: global_step counts one env": (
        "global_step + batch_size",
        "global_step + args.num_steps",
    ),
    "main: the envs reset without the seed": (
        'envs.reset(seed=args.seed + progress["global_step"])',
        "envs.reset()",
    ),
    "Atari: rewards not clipped to their sign for learning": (
        "sign_reward=atari)",
        "sign_reward=False)",
    ),
    "NatureCNN: pixels not scaled to [0, 1]": (".div_(255.0)", ""),
    "explained variance: 1 − it": (
        "explained_var = 1 - (batch.returns - batch.values).var() / var",
        "explained_var = (batch.returns - batch.values).var() / var",
    ),
    # Issue 40's four classes, each in a form of this list's own: a shared behaviour, a figure a user reads, an
    # optimizer's wiring, the end of a run.
    "pg: the step weighs the raw Â, not the normalised one": (
        "policy_loss = -(agent.dist(batch.obs).log_prob(batch.actions) * advantages).mean()",
        "policy_loss = -(agent.dist(batch.obs).log_prob(batch.actions) * batch.advantages).mean()",
    ),
    "main: observations normalised on Box actions, images too": (
        "args.norm_obs = continuous and not image if",
        "args.norm_obs = continuous if",
    ),
    "pg, npg, trpo: Â divided by its variance, not its std": (
        "advantages = (advantages - advantages.mean()) / (advantages.std().nan_to_num() + 1e-8)",
        "advantages = (advantages - advantages.mean()) / (advantages.var().nan_to_num() + 1e-8)",
    ),
    "rollout: an episode's return read from its length": (
        'float(info["episode"]["r"][i]),',
        'float(info["episode"]["l"][i]),',
    ),
    "main: the progress line's mean of the first 20 returns": (
        "np.mean(episodic_returns[-20:])",
        "np.mean(episodic_returns[:20])",
    ),
    "critic's Adam (pg, npg, trpo) at its flag's default rate": (
        "torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate",
        "torch.optim.Adam(agent.critic.parameters(), lr=Args.vf_learning_rate",
    ),
    "PPO: Adam without its ε of 1e-5": (
        "torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5",
        "torch.optim.Adam(agent.parameters(), lr=args.learning_rate",
    ),
    "main: the iterations rounded to the nearest, not down": (
        "num_iterations = max(args.total_timesteps // batch_size, 1)",
        "num_iterations = max(round(args.total_timesteps / batch_size), 1)",
    ),
    "main: the run's last checkpoint one iteration early": (
        "iteration % args.save_every == 0 or iteration == num_iterations)",
        "iteration % args.save_every == 0 or iteration == num_iterations - 1)",
    ),
}


def plant(old: str, new: str, folder: Path) -> list[str]:
    """Replaces old by new in every script of folder that holds it; returns those scripts."""
    planted = []
    for name in SCRIPTS:
        path = folder / f"{name}.py"
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
            planted.append(name)
    return planted


def run(name: str | None, timeout: float, full: bool = False) -> tuple[str, str]:
    """('killed' or 'survived', the failing tests or why) for one mutant; for None, of the code as it is."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ignore = shutil.ignore_patterns(".git", ".venv", "runs", "work", "__pycache__", ".pytest_cache", ".ruff_cache")
        shutil.copytree(ROOT, folder, dirs_exist_ok=True, ignore=ignore)
        if name is not None and not plant(*MUTANTS[name], folder):
            raise SystemExit(f"mutant {name!r}: its text is in no script; update the list")
        command = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-n", "2"]
        command += [] if full else ["-x"]
        command += [f"--ignore={path}" for path in TEXT_TESTS]
        command += [f"--basetemp={folder / '.pytest-tmp'}"]  # not pytest's shared folder, which another run may clean
        try:
            result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "killed", f"ran past {timeout:.0f} s"
        failed = [line[len("FAILED ") :] for line in result.stdout.splitlines() if line.startswith("FAILED")]
        last = (result.stdout.strip() or result.stderr.strip() or "no output").splitlines()[-1][:120]
        if result.returncode == 0:
            return "survived", last
        if not failed:  # an error outside the tests: collection, import, a missing plugin
            return "killed", last
        # With -x and two workers, the test the other worker was running when the first failed may be listed too.
        return "killed", f"{len(failed)} failed: " + "; ".join(failed if full else failed[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=[""], help="the mutants whose name contains any of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and where each is planted")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds; a suite that runs longer kills it")
    parser.add_argument("--full", action="store_true", help="the whole suite on each mutant; list every failure")
    args = parser.parse_args()
    names = [name for name in MUTANTS if any(part in name for part in args.only)]
    if args.list:
        for name in names:
            with tempfile.TemporaryDirectory() as folder:
                for script in SCRIPTS:
                    shutil.copy(ROOT / f"{script}.py", folder)
                print(f"{name}: {', '.join(plant(*MUTANTS[name], Path(folder))) or 'NOWHERE'}")
        return
    verdict, detail = run(None, args.timeout, full=True)  # a suite that fails here would kill every mutant
    if verdict != "survived":
        raise SystemExit(f"the suite fails without a mutant, so it cannot judge one: {detail}")
    survivors = []
    for i, name in enumerate(names, 1):
        start = time.time()
        verdict, detail = run(name, args.timeout, args.full)
        print(f"[{i}/{len(names)}] {verdict:8} {name} ({time.time() - start:.0f} s): {detail}", flush=True)
        survivors += [name] if verdict == "survived" else []
    print(f"\n{len(names) - len(survivors)} of {len(names)} killed; survivors: {survivors or 'none'}")


if __name__ == "__main__":
    main()
