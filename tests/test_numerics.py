"""The evaluation's numbers against closed forms, on networks whose log p(x) is known exactly.

A generator whose output layer has zero weights ignores z: it decodes every latent point to the same
pixel probabilities p = sigmoid(bias), so log p(x) = sum_i log Bernoulli(x_i; p_i) exactly, whatever
q(z|x) is. An encoder whose two heads have zero weights gives every image the same
q(z|x) = N(m, diag(exp(lv))). Then:

- with q = the prior (m = 0, lv = 0) every importance weight is p(x): the bound is exact for every K;
- with q wider than the prior, the mean of log w over single samples (K = 1) estimates
  log p(x) - KL(q || p) = the ELBO, and the bound rises to log p(x) as K grows. Forgetting
  z_log_var in log q(z|x) shifts it by 1/2 sum lv, which these tests see.

The networks are tiny and the image sets small, so these tests take seconds; the mutation run
(docs/mutation-testing.md) relies on them.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict

import keras
import numpy as np
import pytest
from scipy import special

from vaelab import _interrupt
from vaelab._lock import DirectoryLock
from vaelab.analysis import evaluate as evaluation
from vaelab.analysis.evaluate import evaluate, evaluate_and_save
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.data.dataset import binarized_test_set, make_dataset, scale_pixels
from vaelab.errors import Interrupted, VaelabError
from vaelab.models import build_models, reconstruction_loss
from vaelab.run import Run

LATENT_DIM = 2


def images(n: int, seed: int = 0) -> np.ndarray:
    """Digit-like uint8 images: mostly black, some white, some grey, different for every image."""
    rng = np.random.default_rng(seed)
    x = rng.choice([0, 0, 0, 255, 128], size=(n, 28, 28)).astype(np.uint8)
    x[:, :, :3] = rng.integers(0, 256, (n, 28, 3), dtype=np.uint8)
    return x


def dataset(n: int, seed: int = 0):
    x = images(n, seed)
    return make_dataset({"x_train": x[:1], "x_test": x}, name="closed-form", source="generated for the tests")


def closed_form_run(path, *, z_mean: float, z_log_var: float, binarize: bool = False) -> tuple[Run, np.ndarray]:
    """A run whose generator ignores z and whose encoder gives every image N(z_mean, exp(z_log_var)) per dimension.

    Returns it and the generator's pixel probabilities p (784,), computed in float64 from the bias.
    """
    config = RunConfig(
        model=ModelConfig(latent_dim=LATENT_DIM, intermediate_dim=8), train=TrainConfig(binarize=binarize)
    )
    models = build_models(config.model, seed=0)
    bias = np.random.default_rng(1).normal(0.0, 1.5, 784)
    decoder_mean = models.generator.get_layer("decoder_mean")
    decoder_mean.kernel.assign(np.zeros(decoder_mean.kernel.shape, np.float32))
    decoder_mean.bias.assign(bias.astype(np.float32))
    for name, value in (("z_mean", z_mean), ("z_log_var", z_log_var)):
        head = models.encoder.get_layer(name)
        head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
        head.bias.assign(np.full(LATENT_DIM, value, np.float32))
    run = Run(path=path, config=config, info={}, models=models, epoch=0)
    return run, 1.0 / (1.0 + np.exp(-bias.astype(np.float32).astype(np.float64)))


def exact_log_px(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """log p(x) per image, in float64: independent Bernoulli pixels (grey levels: the continuous extension)."""
    x = x.reshape(len(x), -1).astype(np.float64)
    return (x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=1)


def prior_kl(m: float, lv: float) -> float:
    """KL(N(m, e^lv) || N(0, 1)) summed over the latent dimensions, written out here rather than imported."""
    return LATENT_DIM * 0.5 * (math.exp(lv) + m * m - 1 - lv)


@pytest.mark.parametrize("binarize", [False, True])
def test_the_bound_is_exact_for_every_k_when_q_is_the_prior(tmp_path, binarize):
    run, p = closed_form_run(tmp_path, z_mean=0.0, z_log_var=0.0, binarize=binarize)
    data = dataset(12)
    x = binarized_test_set(data) if binarize else scale_pixels(data.x_test)
    log_px = exact_log_px(x, p).mean()
    for k in (1, 3, 40):
        result = evaluate(run, data, samples=k)
        assert (result.images, result.samples, result.binarized) == (12, k, binarize)
        # Every weight p(x|z) p(z) / q(z|x) is p(x): the bound, the ELBO and the reconstruction all give it.
        assert result.iwae == pytest.approx(log_px, abs=2e-3), k
        assert result.nll == -result.iwae
        assert result.elbo == pytest.approx(log_px, abs=2e-3)
        assert result.reconstruction_loss == pytest.approx(-log_px, abs=2e-3)
        assert result.elbo_at_mean == pytest.approx(log_px, abs=2e-3)
        assert result.reconstruction_loss_at_mean == pytest.approx(-log_px, abs=2e-3)
        assert result.kl_loss == pytest.approx(0.0, abs=1e-12)


def test_single_sample_log_weights_average_to_the_elbo(tmp_path):
    m, lv = 0.5, float(np.float32(math.log(4.0)))  # q twice as wide as the prior: the weights are bounded
    run, p = closed_form_run(tmp_path, z_mean=m, z_log_var=lv)
    data = dataset(1000)
    log_px = exact_log_px(scale_pixels(data.x_test), p).mean()
    kl = prior_kl(m, lv)
    result = evaluate(run, data, samples=1)
    # The reconstruction does not depend on z, so the ELBO is log p(x) - KL exactly.
    assert result.kl_loss == pytest.approx(kl, rel=1e-9)
    assert result.elbo == pytest.approx(log_px - kl, abs=2e-3)
    assert result.elbo_at_mean == pytest.approx(log_px - kl, abs=2e-3)  # z = z_mean decodes as any z does
    assert result.reconstruction_loss_at_mean == pytest.approx(-log_px, abs=2e-3)
    # log w - log p(x) = log p(z) - log q(z|x) with z ~ q: its standard deviation per image, from its
    # definition (z = m + sigma e), estimated here on a million draws.
    e = np.random.default_rng(7).standard_normal((1_000_000, LATENT_DIM))
    z = m + math.exp(lv / 2) * e
    log_ratio = (-0.5 * z**2 + 0.5 * e**2 + lv / 2).sum(axis=1)
    assert log_ratio.mean() == pytest.approx(-kl, abs=0.02)
    standard_error = log_ratio.std() / math.sqrt(1000)
    assert abs(result.iwae - result.elbo) < 4 * standard_error  # 4 SE = 0.42 nat; lv forgotten in q: 1.39
    # Every image has the same code: no dimension is active, and each holds half of the KL.
    assert result.unit_activity == (0.0, 0.0) and result.active_units == 0
    assert result.kl_per_dim == pytest.approx((kl / 2, kl / 2), rel=1e-9)


def test_the_bound_rises_to_log_px_as_k_grows(tmp_path):
    m, lv = 0.5, float(np.float32(math.log(4.0)))
    run, p = closed_form_run(tmp_path, z_mean=m, z_log_var=lv)
    data = dataset(10)
    log_px = exact_log_px(scale_pixels(data.x_test), p).mean()
    bounds = {k: evaluate(run, data, samples=k, seed=3).iwae for k in (1, 10, 2000)}
    assert bounds[1] < bounds[10] < bounds[2000] < log_px + 0.03
    # The weights' relative variance is 1.46 here: the bound's bias at K = 2000 is ~4e-4 nat, its noise ~0.01.
    assert bounds[2000] == pytest.approx(log_px, abs=0.03)
    assert bounds[1] == pytest.approx(log_px - prior_kl(m, lv), abs=1.5)


def test_a_near_deterministic_encoder_decodes_its_samples_as_its_mean(tmp_path):
    """With sigma ~ 5e-5 every sample is the code itself: K samples per image score as the code does,
    each against its own image, and both agree with the training loss on the decoded codes."""
    run, _ = closed_form_run(tmp_path, z_mean=0.0, z_log_var=-20.0)
    head = run.encoder.get_layer("z_mean")
    head.kernel.assign(np.random.default_rng(2).normal(0, 0.3, head.kernel.shape).astype(np.float32))
    decoder_mean = run.generator.get_layer("decoder_mean")
    decoder_mean.kernel.assign(np.random.default_rng(3).normal(0, 1.0, decoder_mean.kernel.shape).astype(np.float32))
    data = dataset(9)
    x = scale_pixels(data.x_test)
    decoded = run.decode(run.encode(x)[0])[..., None]
    own = np.asarray(reconstruction_loss(x, decoded)).mean()
    result = evaluate(run, data, samples=5)
    assert result.reconstruction_loss_at_mean == pytest.approx(own, rel=1e-5)
    assert result.reconstruction_loss == pytest.approx(own, rel=1e-3)
    assert np.ptp(np.asarray(reconstruction_loss(x, decoded))) > 10  # the images do score differently
    # The codes differ from image to image: each dimension's activity is the variance of z_mean over them.
    activity = run.encode(x)[0].astype(np.float64).var(axis=0)
    assert result.unit_activity == pytest.approx(tuple(activity), rel=1e-6)
    assert result.active_units == (activity > 0.01).sum() > 0


def test_logsumexp_is_stable_and_exact():
    a = np.array([[-1000.0, -1001.0, -1002.5], [3.0, 3.0, 3.0], [700.0, 0.0, -700.0]])
    np.testing.assert_allclose(evaluation._logsumexp(a, axis=1), special.logsumexp(a, axis=1), rtol=1e-15)
    np.testing.assert_allclose(evaluation._logsumexp(a.T, axis=0), special.logsumexp(a, axis=1), rtol=1e-15)
    one_image = evaluation._logsumexp(np.zeros((1, 4)), axis=1)  # --images 1: one bound, not a scalar
    assert one_image.shape == (1,) and one_image[0] == pytest.approx(math.log(4), rel=1e-15)


def test_points_per_call_bounds_the_decoding_batches_and_not_the_result(tmp_path, monkeypatch):
    run, _ = closed_form_run(tmp_path, z_mean=0.5, z_log_var=math.log(4.0))
    data = dataset(10)
    calls: list[tuple[int, int]] = []
    traced: list[int] = []  # latent points per decoding batch, of either model, seen as Keras traces its step
    build = evaluation._log_likelihood_model

    def recording(run, k):
        model = build(run, k)
        predict = model.predict_on_batch
        step = model.predict_step

        def traced_step(*args):  # traced once per batch shape (the shapes are static there)
            x, z = keras.tree.flatten(args[-1])[:2]
            traced.append(x.shape[0] * z.shape[1])
            return step(*args)

        model.predict_step = traced_step

        def record(inputs):
            calls.append(inputs[1].shape[:2])  # (images, samples) decoded by this call
            return predict(inputs)

        model.predict_on_batch = record
        return model

    monkeypatch.setattr(evaluation, "_log_likelihood_model", recording)
    whole = evaluate(run, data, samples=7, points_per_call=1000)
    assert calls == [(10, 7)]  # everything in one call when it fits
    traced.clear()
    evaluate(run, data, samples=2, points_per_call=4)
    assert max(traced) == 4  # the codes themselves (K = 1) are decoded 4 at a time too, not all 10 at once
    calls.clear()
    split = evaluate(run, data, samples=7, points_per_call=30)
    assert calls == [(4, 7), (4, 7), (2, 7)]  # as many whole images as 30 points allow
    # The same noise, drawn image after image: only the batching changed.
    assert split.iwae == pytest.approx(whole.iwae, rel=1e-6) and split.elbo == pytest.approx(whole.elbo, rel=1e-6)
    calls.clear()
    chunked = evaluate(run, data, samples=25, points_per_call=10)
    assert calls == [(1, 10)] * 30  # K > points: one image per call, its samples in chunks of 10
    reference = evaluate(run, data, samples=25, points_per_call=1000)
    assert chunked.iwae == pytest.approx(reference.iwae, abs=0.5)  # other draws, the same quantity
    assert chunked.kl_loss == reference.kl_loss


def test_k_split_into_chunks_keeps_every_sample(tmp_path):
    run, p = closed_form_run(tmp_path, z_mean=0.0, z_log_var=0.0)
    data = dataset(3)
    log_px = exact_log_px(scale_pixels(data.x_test), p).mean()
    for points in (4, 7, 50):  # chunks that divide K = 50, that do not, and one chunk
        result = evaluate(run, data, samples=50, points_per_call=points)
        assert result.iwae == pytest.approx(log_px, abs=2e-3), points
        assert result.reconstruction_loss == pytest.approx(-log_px, abs=2e-3), points


def test_images_progress_and_silence(tmp_path, capsys):
    run, _ = closed_form_run(tmp_path, z_mean=0.0, z_log_var=0.0)
    data = dataset(7)
    seen = []
    started = time.perf_counter()
    result = evaluate(run, data, samples=2, images=5, points_per_call=4, progress=lambda *done_of: seen.append(done_of))
    elapsed = time.perf_counter() - started
    assert result.images == 5
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert isinstance(result.seconds, float) and 0 < result.seconds <= elapsed + 0.01
    assert result.seconds == round(result.seconds, 2)  # to the hundredth
    assert capsys.readouterr().out == ""  # the library prints nothing; the command prints the result
    assert evaluate(run, data, samples=1, points_per_call=1).images == 7  # one point per call still works
    with pytest.raises(VaelabError, match="--samples must be >= 1, got 0"):
        evaluate(run, data, samples=0)


def test_an_evaluation_that_cannot_fit_in_memory_is_refused_before_it_starts(tmp_path, monkeypatch):
    run, _ = closed_form_run(tmp_path, z_mean=0.0, z_log_var=0.0)
    data = dataset(10)
    needed = 2 * 10 * 30 * 8  # log w and log p(x|z), float64, per image and sample
    monkeypatch.setattr(evaluation, "_physical_memory", lambda: int(needed / evaluation.MEMORY_SHARE))
    assert evaluate(run, data, samples=30).samples == 30  # exactly the share allowed
    monkeypatch.setattr(evaluation, "_physical_memory", lambda: int(needed / evaluation.MEMORY_SHARE) - 1)
    with pytest.raises(VaelabError, match="10 images x 30 samples need"):
        evaluate(run, data, samples=30)
    monkeypatch.setattr(evaluation, "_physical_memory", lambda: 16_050_000_000)
    # 9.65 GB and 16.05 GB, in decimal gigabytes rounded to one place (both round up)
    need = r"^10 images x 60,312,500 samples need 9\.7 GB; this machine has 16\.1 GB"
    message = need + ": use fewer --samples or --images$"
    with pytest.raises(VaelabError, match=message):
        evaluate(run, data, samples=60_312_500)  # refused at once: nothing of that size is allocated


def test_physical_memory_is_the_machines():
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("needs Linux's /proc/meminfo")
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    assert evaluation._physical_memory() == pytest.approx(total_kb * 1024, rel=0.01)


def test_physical_memory_falls_back_to_8_gb(monkeypatch):
    def unknown(name):
        raise ValueError(name)

    monkeypatch.setattr(evaluation.os, "sysconf", unknown)
    assert evaluation._physical_memory() == 8 * 1024**3


def test_the_defaults_are_k_1000_and_seed_0(tmp_path):
    run, _ = closed_form_run(tmp_path, z_mean=0.5, z_log_var=0.3)
    data = dataset(2)
    default = evaluate(run, data)
    assert default.samples == 1000
    assert default.iwae == evaluate(run, data, samples=1000, seed=0).iwae
    assert default.iwae != evaluate(run, data, samples=1000, seed=1).iwae


def test_ctrl_c_stops_the_evaluation_between_batches(tmp_path):
    run, _ = closed_form_run(tmp_path, z_mean=0.0, z_log_var=0.0)
    with _interrupt.stop_at_step_boundary():
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: the handler only sets the flag
        with pytest.raises(Interrupted, match=r"^evaluation interrupted; metrics\.json is unchanged$"):
            evaluate(run, dataset(3), samples=2)


def test_evaluate_and_save_holds_the_lock_and_writes_the_result_into_metrics(tmp_path):
    run, _ = closed_form_run(tmp_path, z_mean=0.0, z_log_var=0.0)
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"loss": 1.0}}))

    def another_writer_is_refused(done, n):
        with pytest.raises(VaelabError, match=r"is in use by .*\bevaluation\b"), DirectoryLock(tmp_path, "training"):
            pass

    result = evaluate_and_save(run, dataset(4), samples=3, progress=another_writer_is_refused)
    assert (result.images, result.samples) == (4, 3)  # the arguments reach the evaluation
    saved = json.loads((tmp_path / "metrics.json").read_text())
    as_json = json.loads(json.dumps(asdict(result)))  # the per-dimension tuples come back as lists
    assert saved == {"test": {"loss": 1.0}, "evaluation": as_json}
    assert json.loads(json.dumps(run.metrics)) == saved  # the run holds what the file holds
