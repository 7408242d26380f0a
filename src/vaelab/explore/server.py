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

from vaelab import analysis
from vaelab.data import Dataset
from vaelab.explore import guards, pagedata
from vaelab.explore.guards import AllowedHosts, BodySizeLimit, HostCheck, SecurityHeaders
from vaelab.run import Run

MAX_POINTS = 256  # latent points per decode request
MAX_STEPS = 64  # interpolation steps
BOUND = analysis.MAX_LATENT_ABS

Coordinate = Annotated[float, Field(ge=-BOUND, le=BOUND, allow_inf_nan=False)]
Point = Annotated[list[Coordinate], Field(min_length=1, max_length=512)]
Pixel = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class DecodeRequest(BaseModel):
    points: list[Point] = Field(min_length=1, max_length=MAX_POINTS, description="latent points, latent_dim each")


class EncodeRequest(BaseModel):
    """An image to encode; its length is checked against the run's shape (Explorer.image), and bounded
    before that by the body limit, which leaves room for the largest run's image (guards.body_limit)."""

    pixels: list[Pixel] = Field(
        min_length=1,
        description="an image in the run's shape (GET /api/runs/{id}/map: image_shape), row by row, channels "
        "last; grey: 0 = blank, 1 = ink",
    )


class InterpolateRequest(BaseModel):
    start: Point
    end: Point
    steps: int = Field(10, ge=2, le=MAX_STEPS, description="points on the segment, endpoints included")


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
    arch: str
    variance: str
    latent_dim: int
    epochs: int
    test_loss: float | None


@dataclass
class Explorer:
    """One run as the page sees it: the encoded test set, the class table, and locked model calls."""

    id: str
    run: Run
    codes: analysis.LatentCodes
    table: list[analysis.ClassRow]
    lock: threading.Lock

    @classmethod
    def load(cls, run_id: str, run: Run, data: Dataset) -> Explorer:
        """The run ready to explore; a one-line VaelabError where its files cannot give what the page reads."""
        pagedata.check_run(run)
        explorer = cls(
            run_id,
            run,
            analysis.encode_test_set(run, data),
            analysis.class_table(run, data) if data.labelled else [],
            threading.Lock(),
        )
        explorer.decode(np.zeros((1, run.config.model.latent_dim), np.float32))  # compile before the first visitor
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
        return np.asarray(points, np.float32)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Decodes in one batch, padded to a power of two so the compiled function is reused."""
        n = len(z)
        size = 1 << (n - 1).bit_length()
        padded = np.zeros((size, z.shape[1]), np.float32)
        padded[:n] = z
        with self.lock:
            images = self.run.generator.predict_on_batch(padded)
        return np.asarray(images)[:n].reshape(n, *self.image_shape)

    def encode(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image (1, H, W, C) -> its z_mean and z_log_var."""
        with self.lock:
            z_mean, z_log_var = self.run.encoder.predict_on_batch(image)
        return np.asarray(z_mean)[0], np.asarray(z_log_var)[0]

    def info(self) -> RunInfo:
        return RunInfo(**pagedata.run_info(self.id, self.run))

    def latent_map(self, data: Dataset) -> dict:
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
        """The test set's codes in the drawn plane, their digits, and the one-image-per-digit table."""
        return get(run_id).latent_map(data)

    @app.get("/api/runs/{run_id}/model")
    def model(run_id: str) -> dict:
        """The run's generator and encoder for the page's JavaScript network (layers, float32 weights)."""
        return get(run_id).models

    @app.post("/api/runs/{run_id}/decode", response_model=Images)
    def decode(run_id: str, body: DecodeRequest) -> Images:
        """Decodes latent points into images."""
        explorer = get(run_id)
        return Images(images=[pagedata.image_b64(im) for im in explorer.decode(explorer.points(body.points))])

    @app.post("/api/runs/{run_id}/encode", response_model=Encoded)
    def encode(run_id: str, body: EncodeRequest) -> Encoded:
        """Encodes an image (a drawing); returns its code, where it lands on the map, and its reconstruction."""
        explorer = get(run_id)
        z_mean, z_log_var = explorer.encode(explorer.image(body.pixels))
        return Encoded(
            z_mean=z_mean.tolist(),
            z_log_var=z_log_var.tolist(),
            coords=explorer.codes.project(z_mean[None])[0].tolist(),
            reconstruction=pagedata.image_b64(explorer.decode(z_mean[None])[0]),
        )

    @app.post("/api/runs/{run_id}/interpolate", response_model=Interpolated)
    def interpolate(run_id: str, body: InterpolateRequest) -> Interpolated:
        """Decodes `steps` evenly spaced points from `start` to `end`, endpoints included."""
        explorer = get(run_id)
        start, end = explorer.points([body.start, body.end])
        points = analysis.segment(start, end, body.steps)
        return Interpolated(points=points.tolist(), images=[pagedata.image_b64(im) for im in explorer.decode(points)])

    return app
