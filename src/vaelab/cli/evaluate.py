"""`vaelab evaluate` and `vaelab train-prior`: what a trained run scores on the test set, and a vqvae's learned
prior over its codes."""

from __future__ import annotations

import argparse
import sys
import time

from vaelab.cli._args import SEED, add_data_options, add_run_parser, load, path, positive_int, wrote
from vaelab.errors import VaelabError


def register(sub) -> None:
    from vaelab.config import PriorConfig

    p = add_run_parser(
        sub, "evaluate", "test-set ELBO, importance-weighted log-likelihood bound and latent diagnostics", cmd_evaluate
    )
    p.add_argument(
        "--samples", type=positive_int, default=1000, metavar="K", help="importance samples per image (default: 1000)"
    )
    p.add_argument("--images", type=positive_int, metavar="N", help="evaluate the first N test images only")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the importance samples (default: 0)")
    p.add_argument(
        "--disentanglement",
        action=argparse.BooleanOptionalAction,
        help="score the codes against the data's known factors: MIG, DCI, FactorVAE score, SAP (default: when the "
        "data has factors: shapes, dsprites, an .npz with `factors`)",
    )

    p = sub.add_parser("train-prior", help="fit a learned prior over a vqvae run's codes (code_prior.npz)")
    p.add_argument("run", type=path, metavar="RUN", help="run directory of a vqvae")
    p.add_argument("--epochs", type=positive_int, help=f"at most (default: {PriorConfig.epochs}; stops earlier)")
    p.add_argument("--seed", type=int, help=f"of the held-out codes and the weights (default: {PriorConfig.seed})")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0, help="Keras' progress output (default: 0)")
    add_data_options(p, of_run=True)
    p.set_defaults(func=cmd_train_prior, out=None)


def _wants_disentanglement(args: argparse.Namespace, run, data) -> bool:
    """Whether `vaelab evaluate` scores disentanglement: asked for (an error without factors), or by default when the
    data has factors and the run has coordinates to score (not a vqvae)."""
    from vaelab.analysis.disentanglement import no_factors

    if args.disentanglement and data.factors is None:
        raise VaelabError(no_factors(data))
    gaussian = run.config.model.member.gaussian_latent
    if args.disentanglement and not gaussian:
        raise VaelabError(
            f"{run.name} is a {run.config.model.family}: its codes are codebook indices, not coordinates to score"
        )
    if args.disentanglement is None:
        return data.factors is not None and gaussian
    return args.disentanglement


def cmd_train_prior(args: argparse.Namespace) -> int:
    """Fits a prior over a vqvae's codes (vaelab.analysis.code_prior), saved as RUN/code_prior.npz, and compares the
    test images' codes' likelihood under it with the uniform prior's."""
    from vaelab.analysis.code_prior import train_prior, uniform_nll
    from vaelab.config import PriorConfig
    from vaelab.run import epochs_in_words

    run, data, _ = load(args)
    if not run.config.model.member.code_prior:
        raise VaelabError(
            f"{args.run} is a {run.config.model.family}, whose prior is fixed; train-prior fits a prior over a "
            "vqvae's codes: give a run trained with --model vqvae"
        )
    started = time.perf_counter()
    config = PriorConfig(**{k: v for k, v in {"epochs": args.epochs, "seed": args.seed}.items() if v is not None})
    prior = train_prior(run, data, config, verbose=args.verbose)
    test_codes = run.codes(data.x_test[: run.config.train.test_subset])
    nll = float(-prior.log_prob(test_codes).mean())
    print(
        f"{run.name}: prior over {run.config.model.latent_dim} codes trained {epochs_in_words(len(prior.history))} in "
        f"{time.perf_counter() - started:.1f} s; the test codes' -log p(z) {nll:.2f} nats per image "
        f"(uniform prior: L log K = {uniform_nll(run):.2f}); saved {run.path / 'code_prior.npz'}"
    )
    print(f"`vaelab evaluate {args.run}` gives the bound on log p(x) with it", file=sys.stderr)
    return 0


def _unfinished(run) -> list[str]:
    """A line saying which weights are evaluated, for a run without training's final figures (metrics.json's `test`):
    a copy of one still training, or one stopped, as its last completed epoch left it."""
    if "test" in run.metrics:
        return []
    epochs = run.config.train.epochs
    state = f"training not finished ({run.epoch} of {epochs} epochs)" if run.epoch < epochs else "no final figures yet"
    return [f"  {state}: the weights of epoch {run.epoch}"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Test-set ELBO, the importance-weighted bound on log p(x) and the latent diagnostics; saved into the run's
    metrics.json; the diagnostic figures (reconstructions, KL per dimension, traversal, snapshots) drawn."""
    from tqdm import tqdm

    from vaelab.analysis.evaluate import evaluate_and_save
    from vaelab.analysis.figures import draw_run_figures
    from vaelab.models.likelihoods import likelihood_note
    from vaelab.run import epochs_in_words

    run, data, out = load(args)
    tangle = _wants_disentanglement(args, run, data)  # before the slow part: no factors is an error at once
    bars = []  # the progress bar appears once the work has started (not before an error)

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="image", desc="evaluate", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        result = evaluate_and_save(
            run, data, samples=args.samples, images=args.images, seed=args.seed, progress=progress
        )
    finally:
        for bar in bars:
            bar.close()
    if not run.config.model.member.gaussian_latent:
        from vaelab.analysis.evaluate_codes import describe

        print("\n".join([f"{run.name}: {result.images:,} test images", *_unfinished(run), *describe(result)]))
        print(f"written to {run.path / 'metrics.json'} ({result.seconds:.0f} s)")
        print(f"no diagnostic figures for a {run.config.model.family} yet", file=sys.stderr)
        return 0
    kind = "binarised" if result.binarized else "8-bit"
    shape = "x".join(str(d) for d in run.config.model.input_shape)
    print(
        f"{run.name}: {result.images:,} {kind} {shape} test images, K = {result.samples} importance samples, "
        f"{result.likelihood} likelihood"
    )
    train = run.config.train
    test = run.metrics.get("test")  # training's final figures: none until its last epoch has ended
    for line in _unfinished(run):
        print(line)
    if train.beta != 1 or train.kl_warmup:
        weighted = run.config.model.member.weighted_kl
        objective = (
            f"its final objective was {test['loss']:.2f} nats = reconstruction + "
            f"{weighted.format(test.get('kl_weight', 1))}; "
            if test
            else ""
        )
        print(
            f"  trained with beta {train.beta:g}, KL warm-up {epochs_in_words(train.kl_warmup)}: {objective}the "
            "figures below are the true ELBO (KL weight 1)"
        )
    print(
        f"  ELBO                       {result.elbo:9.2f} nats = -(reconstruction {result.reconstruction_loss:.2f} "
        f"+ KL {result.kl_loss:.2f}{' estimated at the K samples' if run.config.model.member.kl_estimated else ''})"
    )
    print(
        f"  ELBO with z = z_mean       {result.elbo_at_mean:9.2f} nats (reconstruction "
        f"{result.reconstruction_loss_at_mean:.2f})"
    )
    print(f"  {result.bound + ' >= IWAE bound':26} {result.iwae:9.2f} nats, i.e. NLL <= {result.nll:.2f}")
    if result.bits_per_dim is not None:
        bits = f"{result.bits_per_dim:9.4f} (NLL bound; -ELBO: {result.elbo_bits_per_dim:.4f})"
        print(f"  bits per dimension         {bits}")
    print(f"  {likelihood_note(result.likelihood, result.binarized)}")
    dim = len(result.kl_per_dim)
    print(f"  active units               {result.active_units:9d} of {dim} (Cov_x(E_q[z_j]) > 0.01)")
    print(f"  KL per dimension, nats     {' '.join(f'{k:.2f}' for k in result.kl_per_dim)}")
    seconds = result.seconds
    if tangle:
        from vaelab.analysis.disentanglement import describe, score_and_save

        scores = score_and_save(run, data, images=args.images)
        print("\n".join(describe(scores)))
        seconds += scores.seconds
    print(f"written to {run.path / 'metrics.json'} ({seconds:.0f} s)")
    if run.config.model.conditional:
        print(f"no diagnostic figures for a {run.config.model.family} yet", file=sys.stderr)
        return 0
    figures = draw_run_figures(run, data, out, parts=["diagnose"])
    wrote(*figures.files.values())
    return 0
