"""Why the discretised logistic collapsed on `shapes`, and what each remedy does (issue 27, docs/colour.md).

    python benchmarks/colour_collapse.py NAME [--preset convnet] [--decoder sigmoid|linear] [--log-scale S]
                                              [--kl-warmup N] [--free-bits L] [--train-subset 3000] [--epochs 3]

Trains one network on the first `--train-subset` images of `shapes` with the discretised logistic, the decoder's
last activation `--decoder` (the old sigmoid, or the linear location now the default), the learned log-scale
started at `--log-scale` (now -2; before, 0), a KL warm-up or free bits (Kingma et al., 2016: each latent
dimension's batch-mean KL counts at least L nats in the objective; the logged KL and bits/dim stay the true ones),
then prints one JSON line: the KL and the active units on the first 1,000 test images (vaelab.analysis.diagnostics), the
test bits/dim of the ELBO, how bright the reconstructions make the shapes' pixels (their mean level, against the
images' own), and where the log-scale ended.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--preset", default="convnet")
    p.add_argument("--decoder", choices=("sigmoid", "linear"), default="linear")
    p.add_argument("--log-scale", type=float, default=None)
    p.add_argument("--kl-warmup", type=int, default=0)
    p.add_argument("--free-bits", type=float, default=0.0)
    p.add_argument("--train-subset", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--scale", choices=("global", "pixel"), default=None)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    import vaelab  # sets the Keras backend before keras is imported
    from vaelab.analysis.diagnostics import latent_diagnostics
    from vaelab.models import likelihoods

    if args.log_scale is not None:  # the dict models/ reads when it builds the LogScale layer
        likelihoods.INITIAL_LOG_SCALE["logistic"] = args.log_scale
    if args.free_bits:
        _free_bits(args.free_bits)
    config = vaelab.make_config(
        args.preset, dataset="shapes", epochs=args.epochs, train_subset=args.train_subset, test_subset=1000,
        kl_warmup=args.kl_warmup, likelihood="logistic", latent_dim=args.latent_dim, scale=args.scale,
        learning_rate=args.learning_rate,
    )  # fmt: skip
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, decoder_activation=args.decoder))
    data = vaelab.load_dataset("shapes", data_dir=args.data_dir)
    with tempfile.TemporaryDirectory() as out:
        run = vaelab.train(config, out, data=data, snapshots=False, verbose=0, log=lambda message: None)
        x = data.x_test[:1000]
        diagnostics = latent_diagnostics(*run.encode(x))
        reconstructions = run.reconstruct(x)
        lit = x.max(axis=-1) > 0
        log_scale = [float(np.mean(w.numpy())) for w in run.vae.weights if "log_scale" in w.path]
        print(json.dumps({
            "name": args.name, **vars(args),
            "kl": round(float(diagnostics.kl_per_dim.sum()), 2),
            "active_units": f"{diagnostics.active_units} of {len(diagnostics.active)}",
            "bits_per_dim": round(run.metrics["test"]["bits_per_dim"], 4),
            "shape_pixels_reconstructed": round(float(reconstructions[lit].mean()), 3),
            "shape_pixels_true": round(float(x[lit].mean() / 255), 3),
            "log_scale_end": [round(v, 2) for v in log_scale],
            "kl_per_epoch": [round(row["kl_loss"], 1) for row in run.history],
            **colour_scores(run, x, reconstructions, data.name),
            "in_code": factors_in_code(run.encode(x)[0]),
        }))  # fmt: skip


def factors_in_code(z_mean: np.ndarray) -> dict:
    """How well each factor of the test images can be read from their codes: the share of images whose 10 nearest
    other codes' majority (shape, colour), or mean (size, x, y; as R^2), gives their own factor."""
    from vaelab.data.shapes import CATEGORICAL, FACTORS, shapes_factors

    factors = shapes_factors("test")
    d = ((z_mean[:, None, :] - z_mean[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    neighbours = np.argsort(d, axis=1)[:, :10]
    scores = {}
    for name in FACTORS:
        f = factors[name][: len(z_mean)]
        if name in CATEGORICAL:
            votes = np.array([np.bincount(f[n], minlength=f.max() + 1).argmax() for n in neighbours])
            scores[name] = round(float((votes == f).mean()), 3)
        else:
            guess = f[neighbours].mean(1)
            scores[name] = round(float(1 - ((guess - f) ** 2).mean() / f.var()), 3)
    return scores


def colour_scores(run, x: np.ndarray, reconstructions: np.ndarray, dataset: str) -> dict:
    """Whether the decoder shows the shapes' colours: the share of test images whose reconstructed shape is, on
    average, nearest the palette colour it was drawn in; and over the 10x10 latent grid the report draws, how many of
    the palette's colours the decoded shapes take (each decoded image's lit pixels averaged, the nearest colour)."""
    from vaelab.analysis.latent import manifold
    from vaelab.data.shapes import PALETTE, shapes_factors

    palette = PALETTE.astype(np.float32) / 255

    def nearest(colours: np.ndarray) -> np.ndarray:
        return np.argmin(((colours[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)

    lit = x.max(axis=-1) > 0
    mean_colour = np.stack([r[m].mean(0) for r, m in zip(reconstructions, lit, strict=True)])
    true = shapes_factors("test")["colour"][: len(x)]
    _, grid = manifold(run, n=10)
    grid = grid.reshape(100, -1, 3)
    shown = grid.max(-1) > 0.25
    grid_colours = np.array([g[m].mean(0) for g, m in zip(grid, shown, strict=True) if m.any()]).reshape(-1, 3)
    return {
        "colour_accuracy": round(float((nearest(mean_colour) == true).mean()), 3),
        "grid_lit": int(shown.any(-1).sum()),
        "grid_brightest": round(float(grid.max()), 3),
        "grid_colours": len(set(nearest(grid_colours).tolist())) if len(grid_colours) else 0,
        "grid_colour_spread": round(float(grid_colours.std(0).mean()), 3) if len(grid_colours) else 0.0,
    }


def _free_bits(floor: float) -> None:
    """The VAE's objective with free bits: sum_j max(floor, batch mean of KL_j), the logged KL unchanged."""
    from keras import ops

    from vaelab.models.kl import gaussian_kl
    from vaelab.models.vae import VAE, reconstruction_loss

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction = reconstruction_loss(x, y_pred["x_decoded_mean"], self.likelihood, y_pred.get("x_log_scale"))
        per_dim = gaussian_kl(y_pred["z_mean"], y_pred["z_log_var"])
        self.track(reconstruction, ops.sum(per_dim, axis=-1))
        kl = ops.sum(ops.maximum(ops.mean(per_dim, axis=0), floor))
        return ops.mean(reconstruction) + ops.cast(self.kl_weight, kl.dtype) * kl

    VAE.compute_loss = compute_loss


if __name__ == "__main__":
    main()
