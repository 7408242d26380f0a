"""Reproduces one number of a published table: Burda, Grosse & Salakhutdinov (2015), Table 1, VAE, k = 1.

    python benchmarks/reproduce_iwae_table.py [--epochs 200] [--batch-size 20] [--out runs/iwae-table1]

The paper's setting: dynamically binarised MNIST (binary pixels drawn afresh each time an image is
seen; a fixed binarised test set), one stochastic layer of 50 units, two deterministic layers of 200
tanh units in the encoder and in the decoder, Adam, and the negative log-likelihood of the test set
estimated with K = 5000 importance samples. The paper reports 86.76 nats; independent reproductions
87.16-87.78. The paper trains 3,280 epochs (learning rate 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7,
batch 20); this script runs the same eight-stage decay compressed into --epochs epochs (vaelab's
`lr_decay_epochs`), so that it fits the time at hand, and says what it spent.

The run goes through `vaelab.train` like any other (reused if it is complete, resumed if it was
interrupted), and is evaluated with `vaelab.evaluate` (K = 5000 on all 10,000 test images, ~40 s
per 1,000 images on 2 cores). Prints a Markdown table: our NLL beside the paper's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PAPER_NLL = 86.76  # Burda et al. (2015), Table 1, MNIST, VAE, 1 stochastic layer, k = 1
REPRODUCTIONS = "87.16-87.78"  # independent reproductions of that entry (issue 10)
GOAL = 1.0  # nats: what "reproduced" means here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs, over which the 8-stage decay is laid")
    parser.add_argument("--batch-size", type=int, default=20, help="the paper's 20")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="the paper's initial rate")
    parser.add_argument("--samples", type=int, default=5000, help="K importance samples (the paper's 5000)")
    parser.add_argument("--images", type=int, default=None, help="evaluate the first N test images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/iwae-table1"))
    args = parser.parse_args()

    import vaelab  # noqa: F401  (chooses the Keras backend)
    from vaelab._malloc import tune_malloc
    from vaelab.config import make_config
    from vaelab.data import load_dataset, test_images
    from vaelab.diagnostics import latent_diagnostics
    from vaelab.evaluate import evaluate_and_save
    from vaelab.report import ensure_run
    from vaelab.run import machine

    tune_malloc()
    config = make_config(
        "mlp",
        latent_dim=50,
        hidden=(200, 200),
        activation="tanh",
        binarize=True,
        optimizer="adam",
        learning_rate=args.learning_rate,
        lr_decay_epochs=args.epochs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    data = load_dataset("mnist")
    started = time.perf_counter()
    run = ensure_run(config, args.out, data, log=lambda msg: print(msg, file=sys.stderr), verbose=2)
    trained = time.perf_counter() - started
    done = run.metrics.get("evaluation", {})
    images = args.images or len(data.x_test)
    if done.get("samples") == args.samples and done.get("images") == images:
        nll, eval_seconds = done["nll"], done["seconds"]
    else:
        print(f"evaluating with K = {args.samples} on {images} test images", file=sys.stderr)
        result = evaluate_and_save(run, data, samples=args.samples, images=args.images)
        nll, eval_seconds = result.nll, result.seconds
    gap = nll - PAPER_NLL
    latent = latent_diagnostics(*run.encode(test_images(data, binarized=True)))
    print(f"\nmachine: {machine()}; run {run.path}")
    print(
        f"training: {run.epoch} epochs, {run.metrics['train_seconds'] / 60:.1f} min of epochs "
        f"({trained / 60:.1f} min wall in this call); evaluation {eval_seconds / 60:.1f} min\n"
    )
    print("| MNIST, VAE k = 1, 1 stochastic layer (50), 2x200 tanh | epochs | NLL (K = 5000), nats |")
    print("|---|---:|---:|")
    print(f"| Burda et al. (2015), Table 1 | 3,280 | {PAPER_NLL:.2f} |")
    print(f"| independent reproductions | | {REPRODUCTIONS} |")
    print(f"| vaelab, this run (Adam, the paper's decay in {args.epochs} epochs, batch {args.batch_size}) "
          f"| {run.epoch} | {nll:.2f} |")  # fmt: skip
    verdict = "within" if abs(gap) <= GOAL else "not within"
    print(f"\n{nll:.2f} - {PAPER_NLL:.2f} = {gap:+.2f} nats: {verdict} {GOAL:.1f} nat of the paper.")
    print(f"test ELBO {-run.metrics['evaluation']['elbo']:.2f} nats; {latent.active_units} of 50 units active")


if __name__ == "__main__":
    main()
