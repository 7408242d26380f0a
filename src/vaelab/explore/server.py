"""`vaelab explore`: a local web page to move through a trained VAE's latent space.

A FastAPI app serves the page (vendored, no CDN) and a small JSON API: list runs, the latent map,
the networks for the page's JavaScript (which decodes and encodes in the browser), and decode,
encode and interpolate for scripts. Runs are chosen by an id from the server's own list, never by a
path from the client; every input is validated, and bad input is a 4xx with a one-line message.
The HTTP-level guards (Host check, security headers, size limits) are in `guards.py`.

Images of any shape (height, width, channels) travel row by row, channels last: a decoded image as
base64 bytes (0-255; grey: 255 = ink, colour: the colour), an image to encode as height*width*channels
numbers in [0, 1] in the run's own shape (for a colour run, 1 = full intensity; the page's drawing pad
sends black ink on white), checked against the run it is sent to: another count is a 422 naming it.

A cvae encodes and decodes with a class: decode, encode and interpolate take `label` (0 to classes-1) for
it, and refuse one for the other models. A vqvae's points are its L code indices (integers, 0 to K-1): it
decodes them, and its map is a code grid (pagedata.code_grid); encode and interpolate refuse it.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from vaelab.analysis import latent as analysis
from vaelab.data import Dataset
from vaelab.data.batches import one_hot
from vaelab.explore import guards, pagedata
from vaelab.explore.guards import AllowedHosts, BodySizeLimit, HostCheck, RequestLimit, SecurityHeaders
from vaelab.models import likelihoods
from vaelab.run import Run

MAX_POINTS = 256  # latent points per decode request
MAX_STEPS = 64  # interpolation steps
BOUND = analysis.MAX_LATENT_ABS

Coordinate = Annotated[float, Field(ge=-BOUND, le=BOUND, allow_inf_nan=False)]
Point = Annotated[list[Coordinate], Field(min_length=1, max_length=512)]
Pixel = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Label = Annotated[int | None, Field(ge=0, description="a cvae's class (0 to classes-1); only for a cvae")]


class DecodeRequest(BaseModel):
    points: list[Point] = Field(
        min_length=1, max_length=MAX_POINTS, description="latent points, latent_dim each (a vqvae: L code indices)"
    )
    label: Label = None


class EncodeRequest(BaseModel):
    """An image to encode; its length is checked against the run's shape (Explorer.image), and bounded
    before that by the body limit, which leaves room for the largest run's image (guards.body_limit)."""

    pixels: list[Pixel] = Field(
        min_length=1,
        description="an image in the run's shape (GET /api/runs/{id}/map: image_shape), row by row, channels "
        "last; grey: 0 = blank, 1 = ink",
    )
    label: Label = None


class InterpolateRequest(BaseModel):
    start: Point
    end: Point
    steps: int = Field(10, ge=2, le=MAX_STEPS, description="points on the segment, endpoints included")
    label: Label = None


class Images(BaseModel):
    images: list[str] = Field(
        description="uint8 images in the run's shape, base64, row by row, channels last (grey: 255 = ink)"
    )


class Encoded(BaseModel):
    z_mean: list[float]
    z_log_var: list[float]
    coords: list[float] = Field(description="where the point lies on the drawn map")
    reconstruction: str


class Interpolated(Images):
    points: list[list[float]]


class RunInfo(BaseModel):
    id: str
    name: str
    preset: str
    family: str
    family_note: str  # " (iwae)" beside the preset's name, " (k = 5)" for a vae with --k 5; "" for the exercise's vae
    arch: str
    variance: str
    latent_dim: int
    epochs: int
    test_loss: float | None


@dataclass
class Explorer:
    """One run as the page sees it: the encoded test set and the class table (a vqvae: its code grid), and
    locked model calls."""

    id: str
    run: Run
    codes: analysis.LatentCodes | None  # None for a vqvae
    table: list[analysis.ClassRow]
    grid: dict | None  # a vqvae's code grid (pagedata.code_grid), else None
    lock: threading.Lock

    @classmethod
    def load(cls, run_id: str, run: Run, data: Dataset) -> Explorer:
        """The run ready to explore; a one-line VaelabError where its files cannot give what the page reads."""
        pagedata.check_run(run)
        if pagedata.is_vqvae(run):
            explorer = cls(run_id, run, None, [], pagedata.code_grid(run_id, run, data), threading.Lock())
        else:
            codes = analysis.encode_test_set(run, data)
            table = analysis.class_table(run, data) if data.labelled else []
            explorer = cls(run_id, run, codes, table, None, threading.Lock())
        first = 0 if run.config.model.conditional else None
        explorer.decode(np.zeros((1, explorer.latent_dim), np.float32), first)  # compile before the first visitor
        return explorer

    @property
    def latent_dim(self) -> int:
        return self.run.config.model.latent_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the run's images."""
        return tuple(pagedata.image_shape(self.run))

    def image(self, pixels: list[float]) -> np.ndarray:
        """Pixels sent to encode as one image (1, H, W, C); a 422 naming the run's shape when the count differs."""
        h, w, c = self.image_shape
        if len(pixels) != h * w * c:
            raise HTTPException(
                422, f"pixels: run {self.id} takes {h * w * c} values (a {h}x{w}x{c} image), got {len(pixels)}"
            )
        return np.asarray(pixels, np.float32).reshape(1, h, w, c)

    def points(self, points: list[list[float]]) -> np.ndarray:
        if any(len(p) != self.latent_dim for p in points):
            raise HTTPException(422, f"each point needs {self.latent_dim} coordinates for run {self.id}")
        k = self.run.config.model.codebook_size if self.grid is not None else None
        if k is not None and not all(float(v).is_integer() and 0 <= v < k for p in points for v in p):
            raise HTTPException(422, f"run {self.id} is a vqvae: its points are code indices, integers 0 to {k - 1}")
        return np.asarray(points, np.float32)

    def label(self, label: int | None) -> int | None:
        """The class a cvae is given, checked: required for a cvae (0 to classes-1), refused for the others."""
        model = self.run.config.model
        if not model.conditional:
            if label is not None:
                raise HTTPException(422, f"label: run {self.id} is a {model.family}, which reads no class")
            return None
        if label is None or label >= model.classes:
            raise HTTPException(
                422, f"label: run {self.id} is a {model.family}: give the class, 0 to {model.classes - 1}"
            )
        return label

    def not_for_codes(self, what: str) -> None:
        """A 422 where the run is a vqvae, whose codes are indices, not a point to `what`."""
        if self.grid is not None:
            raise HTTPException(422, f"run {self.id} is a vqvae: its codes are codebook indices; it cannot {what}")

    def _inputs(self, batch: np.ndarray, label: int | None):
        """The generator's or encoder's input: `batch`, and for a cvae the one-hot class `label` for each."""
        if label is None:
            return batch
        return [batch, one_hot(np.full(len(batch), label), self.run.config.model.classes)]

    def decode(self, z: np.ndarray, label: int | None = None) -> np.ndarray:
        """Decodes in one batch (a cvae: as class `label`), padded to a power of two so the compiled function is
        reused."""
        n = len(z)
        size = 1 << (n - 1).bit_length()
        padded = np.zeros((size, z.shape[1]), "int32" if self.grid is not None else np.float32)
        padded[:n] = z
        with self.lock:
            decoded = self.run.generator.predict_on_batch(self._inputs(padded, label))
        images = likelihoods.image(self.run.config.model.pixel_likelihood, np.asarray(decoded)[:n])
        return images.reshape(n, *self.image_shape)

    def encode(self, image: np.ndarray, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One image (1, H, W, C) (a cvae: of class `label`) -> its z_mean and z_log_var."""
        with self.lock:
            z_mean, z_log_var = self.run.encoder.predict_on_batch(self._inputs(image, label))
        return np.asarray(z_mean)[0], np.asarray(z_log_var)[0]

    def info(self) -> RunInfo:
        return RunInfo(**pagedata.run_info(self.id, self.run))

    def latent_map(self, data: Dataset) -> dict:
        if self.grid is not None:
            return self.grid
        return pagedata.latent_map(self.id, self.run, self.codes, self.table, data)

    @functools.cached_property
    def models(self) -> dict:
        return pagedata.models(self.run)


def create_app(runs: list[Run], data: Dataset, *, allowed_hosts: AllowedHosts | None = None) -> FastAPI:
    """The explorer's web app for `runs` (ids "0", "1", ... in the given order).

    With `allowed_hosts`, requests whose Host header is not among them are refused (guards.HostCheck).
    """
    explorers = {str(k): Explorer.load(str(k), run, data) for k, run in enumerate(runs)}
    largest = max(math.prod(e.image_shape) for e in explorers.values())
    static = Path(str(resources.files("vaelab.explore").joinpath("static")))
    app = FastAPI(
        title="vaelab explorer",
        version="1",
        description="Explore a trained VAE's latent space.",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodySizeLimit, limit=guards.body_limit(largest))
    app.add_middleware(RequestLimit, limit=guards.MAX_CONCURRENCY)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(SecurityHeaders)  # added last, so outermost: on every response, refusals included

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return JSONResponse({"detail": f"{where}: {first.get('msg')}" if where else first.get("msg")}, 422)

    def get(run_id: str) -> Explorer:
        if run_id not in explorers:
            raise HTTPException(404, f"no run {run_id!r}; GET /api/runs lists them")
        return explorers[run_id]

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(static / "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        files = {p.name: p for p in static.iterdir() if p.is_file()}
        if name not in files:
            raise HTTPException(404, "no such file")
        return FileResponse(files[name])

    @app.get("/api/runs", response_model=list[RunInfo])
    def list_runs() -> list[RunInfo]:
        """The runs this server explores."""
        return [e.info() for e in explorers.values()]

    @app.get("/api/runs/{run_id}/map")
    def latent_map(run_id: str) -> dict:
        """The test set's codes in the drawn plane, their digits, and the one-image-per-digit table (a vqvae:
        its code grid, pagedata.code_grid)."""
        return get(run_id).latent_map(data)

    @app.get("/api/runs/{run_id}/model")
    def model(run_id: str) -> dict:
        """The run's generator and encoder for the page's JavaScript network (layers, float32 weights)."""
        return get(run_id).models

    @app.post("/api/runs/{run_id}/decode", response_model=Images)
    def decode(run_id: str, body: DecodeRequest) -> Images:
        """Decodes latent points into images (a cvae: as class `label`; a vqvae: code indices)."""
        explorer = get(run_id)
        images = explorer.decode(explorer.points(body.points), explorer.label(body.label))
        return Images(images=[pagedata.image_b64(im) for im in images])

    @app.post("/api/runs/{run_id}/encode", response_model=Encoded)
    def encode(run_id: str, body: EncodeRequest) -> Encoded:
        """Encodes an image (a drawing); returns its code, where it lands on the map, and its reconstruction."""
        explorer = get(run_id)
        explorer.not_for_codes("place on a map")
        label = explorer.label(body.label)
        z_mean, z_log_var = explorer.encode(explorer.image(body.pixels), label)
        return Encoded(
            z_mean=z_mean.tolist(),
            z_log_var=z_log_var.tolist(),
            coords=explorer.codes.project(z_mean[None])[0].tolist(),
            reconstruction=pagedata.image_b64(explorer.decode(z_mean[None], label)[0]),
        )

    @app.post("/api/runs/{run_id}/interpolate", response_model=Interpolated)
    def interpolate(run_id: str, body: InterpolateRequest) -> Interpolated:
        """Decodes `steps` evenly spaced points from `start` to `end`, endpoints included."""
        explorer = get(run_id)
        explorer.not_for_codes("interpolate")
        label = explorer.label(body.label)
        start, end = explorer.points([body.start, body.end])
        points = analysis.segment(start, end, body.steps)
        images = explorer.decode(points, label)
        return Interpolated(points=points.tolist(), images=[pagedata.image_b64(im) for im in images])

    return app
