"""The HTTP API (FastAPI): KServe V1 explain route for small work, jobs for the rest, health, models, metrics
(DESIGN §10).  Every error is JSON {"error": one line, "field": the request field at fault}; bad input never
reaches a traceback.  The classifier runs in-process, in the worker thread (serve/worker.py).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import __version__, params
from ..errors import InfolensError
from ..images import IMAGE_SUFFIXES
from . import guard
from .jobs import ACTIVE, JobStore
from .metrics import Metrics
from .models import ServedModels, check_params, field_of
from .requests import ApiError, decode_base64, decode_instance, extension, read_form, read_json
from .worker import PROBE_S, RESULT, Worker

FORMATS = {"json": "application/json", "npz": "application/octet-stream", "png": "image/png"}


@dataclass
class ServeConfig:
    """state_dir: jobs database and job folders; models_dir: the served classifiers (default: the shipped ones);
    tokens: accepted bearer tokens (empty: no auth); queue_size: active jobs at most (then 429); max_body_mb:
    request body limit (413); max_pixels: decoded image pixels at most, read from the header (413);
    max_forwards: forwards a job may need at most (422); sync_forwards: the synchronous route's budget per request
    (422 beyond: use the jobs API); retention_hours: ended jobs are deleted after this; chunk_forwards: forwards
    per chunk before the next job's turn; examples_dir: photos the web viewer offers (default: the source tree's
    examples/ when there is one); placement: OnnxClassifier keywords (device, …)."""

    state_dir: str = "infolens-state"
    models_dir: str | None = None
    tokens: list[str] = field(default_factory=list)
    queue_size: int = 64
    max_body_mb: float = 20.0
    max_pixels: int = params.MAX_PIXELS
    max_forwards: int = 5_000_000
    sync_forwards: int = 20_000
    retention_hours: float = 168.0
    chunk_forwards: int = 4096
    examples_dir: str | None = None
    placement: dict = field(default_factory=dict)


def create_app(config: ServeConfig) -> FastAPI:
    """The app; its worker starts with it (FastAPI lifespan) and stops with it."""
    from contextlib import asynccontextmanager

    store = JobStore(config.state_dir)
    models = ServedModels(config.models_dir, **config.placement, max_pixels=config.max_pixels)
    metrics = Metrics(store)
    worker = Worker(store, models, config.chunk_forwards, config.retention_hours * 3600, metrics)

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.stop()
        worker.join(timeout=30)

    app = FastAPI(title="infolens", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.store, app.state.models, app.state.worker, app.state.config = store, models, worker, config
    examples_dir = config.examples_dir or default_examples()
    examples = sorted(f for f in os.listdir(examples_dir) if f.lower().endswith(IMAGE_SUFFIXES)) if examples_dir \
        else []

    guard.install(app, config, metrics)

    # ---- the web viewer ----------------------------------------------------------------------------------------
    @app.get("/")
    async def viewer():
        """The web viewer: upload or pick an image, choose the settings, watch the job, see the maps."""
        import json
        from importlib.resources import files

        from ..methods import METHODS
        from ..samplers import SAMPLERS

        page = files("infolens.serve").joinpath("viewer.html").read_text()
        d = params.ExplainConfig()  # the form starts where `infolens explain` does
        defaults = {"method": d.method, "K": d.K, "S": d.stride or d.K, "N": d.samples or d.default_samples(d.method),
                    "classes": d.classes, "seed": d.seed}
        for key, value in (("methods", [m for m in METHODS if m != "ig"]), ("samplers", list(SAMPLERS)),
                           ("examples", examples), ("defaults", defaults)):
            page = page.replace("{{" + key + "}}", json.dumps(value))
        return Response(page, media_type="text/html")

    @app.get("/v1/examples")
    async def list_examples():
        """The example photos the viewer offers."""
        return {"examples": examples}

    @app.get("/v1/examples/{name}")
    async def example(name: str):
        """One example photo's file."""
        if name not in examples:
            raise ApiError(404, f"no example {name!r}: there are {', '.join(examples) or 'none'}", "name")
        return FileResponse(os.path.join(examples_dir, name))

    # ---- health, models, metrics -----------------------------------------------------------------------------
    @app.get("/v2/health/live")
    async def live():
        """Liveness: the process answers."""
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        """Readiness: the models are loaded and warmed up and the state folder can be written (503 otherwise)."""
        if not worker.ready.is_set():
            return JSONResponse({"ready": False}, status_code=503)
        if worker.fault is not None:
            return JSONResponse({"ready": False, "error": worker.fault}, status_code=503)
        return {"ready": True}

    @app.get("/v1/models")
    async def list_models():
        """The served classifiers: names, sha256, cards."""
        return {"models": models.describe()}

    @app.get("/metrics")
    async def prometheus():
        """Prometheus metrics: jobs by state, queue depth, waits, run times, forwards, rejections."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    # ---- jobs --------------------------------------------------------------------------------------------------
    @app.post("/v1/jobs", status_code=202)
    async def submit(request: Request):
        """Submit a job: a JSON body (model, base64 image, params) or a form (file, model, params as fields); 202
        with its id."""
        # _create writes the job database: in a thread, so that a database another process has locked delays this
        # request only, not the event loop and every other request
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            model, data, raw_params = await read_form(request)  # curl -F file=@photo.jpg -F model=… -F K=16
            job = await run_in_threadpool(_create, model, data, raw_params, "file", "model", decoded=True)
        else:
            body = await read_json(request)
            job = await run_in_threadpool(_create, body.get("model"), body.get("image"), body.get("params"),
                                          "image", "model")
        return JSONResponse({"id": job.id, "state": job.state, "forwards_total": job.forwards_total},
                            status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs/{job_id}")
    async def status(job_id: str):
        """A job's state, forwards done of total and estimated seconds left; links to its result when done."""
        job = _job(job_id)
        eta = worker.eta(job)
        out = job.public() | {"eta_s": None if eta is None else round(eta, 1)}
        if worker.fault is not None and job.state in ACTIVE:
            out["error"] = worker.fault  # why it waits
        if job.state == "done":
            out["result"] = {f: f"/v1/jobs/{job.id}/result?format={f}" for f in FORMATS}
        return out

    @app.delete("/v1/jobs/{job_id}")
    def cancel(job_id: str):  # a plain function: FastAPI runs it in a thread (it writes the job database)
        """Cancel a queued or running job."""
        job = _job(job_id)
        if not store.cancel(job.id):
            raise ApiError(409, f"job {job_id} has already ended ({job.state})", "id")
        worker.submit()
        return store.get(job_id).public()

    @app.get("/v1/jobs/{job_id}/result")
    async def result(job_id: str, format: str = "json", map: str | None = None, cls: int | None = None):
        """A done job's result: the npz arrays, the JSON record, or one map's PNG overlay."""
        job = _job(job_id)
        if job.state != "done":
            raise ApiError(409, f"job {job_id} is {job.state}: its result comes when it is done", "id")
        if format not in FORMATS:
            raise ApiError(422, f"format must be one of {', '.join(FORMATS)}", "format")
        folder = store.folder(job_id)
        if format != "png":
            return FileResponse(os.path.join(folder, f"{RESULT}.{format}"), media_type=FORMATS[format],
                                filename=f"{job_id}.{format}")
        import json

        with open(os.path.join(folder, f"{RESULT}.json")) as f:
            files = json.load(f)["files"]
        key = map or next(k for k in files if k not in ("npz", "json"))
        if cls is not None:
            key = f"{map or 'pmi'}_{cls}"
        if key not in files or key in ("npz", "json"):
            pngs = [k for k in files if k not in ("npz", "json")]
            raise ApiError(404, f"no map {key!r} in this result: it has {', '.join(pngs)}", "map")
        return FileResponse(os.path.join(folder, files[key]), media_type="image/png", filename=files[key])

    # ---- KServe V1, synchronous --------------------------------------------------------------------------------
    @app.post("/v1/models/{name}:explain")
    async def explain(name: str, request: Request):
        """KServe V1, synchronous: explain small requests in one call (above --sync-forwards: use the jobs)."""
        import asyncio

        body = await read_json(request)
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise ApiError(422, "instances must be a non-empty list of images (base64 strings, {\"b64\": ...} or "
                           "[H][W][3] uint8 arrays)", "instances")
        raw_params = body.get("parameters", body.get("params"))
        models.check(name)
        images = [decode_instance(x, f"instances.{i}") for i, x in enumerate(instances)]
        try:
            p = check_params(raw_params)
            total = sum(_forwards(name, p, raw_params) for _ in images)
        except InfolensError as e:  # KServe calls the object "parameters"
            field = e.param.replace("params", "parameters", 1) if "parameters" in body and e.param else e.param
            raise InfolensError(str(e), field) from None
        if total > config.sync_forwards:
            metrics.rejections.labels("sync_budget").inc()
            raise ApiError(422, f"{total} forwards is over the synchronous budget of {config.sync_forwards}: submit "
                           "it to POST /v1/jobs and poll GET /v1/jobs/{id}", "instances")
        jobs = [await run_in_threadpool(_create, name, data, raw_params, f"instances.{i}", "model", sync=True,
                                        decoded=True) for i, data in enumerate(images)]
        while any(store.get(j.id).state in ACTIVE for j in jobs):
            _refuse_while_held()
            await asyncio.sleep(0.02)
        predictions = []
        for j in jobs:
            j = store.get(j.id)
            if j.state != "done":
                raise ApiError(422, j.error or f"the explanation was {j.state}", "instances")
            predictions.append(_prediction(store.folder(j.id)))
        return {"predictions": predictions}

    # ---- helpers -----------------------------------------------------------------------------------------------
    admission = threading.Lock()

    def _refuse_while_held():
        """503 while the worker holds the queue: the state folder cannot be written (worker.fault says why)."""
        if worker.fault is not None:
            raise ApiError(503, worker.fault, None, {"Retry-After": str(int(PROBE_S))})

    def _job(job_id: str):
        job = store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id} (ended jobs are deleted after {config.retention_hours:g} h)", "id")
        return job

    def _forwards(name, p, raw) -> int:
        try:
            return models.forwards(name, p)
        except InfolensError as e:
            raise InfolensError(str(e), field_of(e.param, raw)) from None

    def _create(name, image, raw_params, image_field, model_field, sync=False, decoded=False):
        if not isinstance(name, str):
            raise ApiError(422, "model is required: the name of a served model (GET /v1/models)", model_field)
        try:
            models.check(name)
        except InfolensError as e:
            raise ApiError(404 if not sync else 422, str(e), model_field) from None
        data = image if decoded else decode_base64(image, image_field)
        _check_pixels(data, image_field)
        p = check_params(raw_params)
        forwards = _forwards(name, p, raw_params)
        if forwards > config.max_forwards:
            metrics.rejections.labels("forwards").inc()
            raise ApiError(422, f"this job needs {forwards} forwards, over the server's limit of "
                           f"{config.max_forwards} (raise K, S or lower N)", "params")
        _refuse_while_held()
        with admission:  # the queue's count and the new record at once: submissions run in threads
            if not sync and len(store.active()) >= config.queue_size:
                metrics.rejections.labels("queue_full").inc()
                retry = max(1, int(min((worker.eta(j) or 0) for j in store.active()) or 1))
                raise ApiError(429, f"the queue is full ({config.queue_size} jobs): retry later", None,
                               {"Retry-After": str(retry)})
            job = store.create(name, p, data, "image" + extension(data), forwards, sync=sync)
        worker.submit()
        return job

    def _check_pixels(data: bytes, where: str):
        from ..images import image_size

        size = image_size(data)
        if size is None:
            raise ApiError(422, "not an image this server reads (PNG, JPEG, GIF, BMP, WebP or TIFF)", where)
        if size[0] * size[1] > config.max_pixels:
            metrics.rejections.labels("pixels").inc()
            raise ApiError(413, f"image of {size[0]}x{size[1]} pixels is over the server's limit of "
                           f"{config.max_pixels} pixels", where)

    return app


def default_examples() -> str | None:
    """The source tree's examples/ folder (an editable install or a clone), if there is one."""
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
    return folder if os.path.isdir(folder) else None


def _prediction(folder: str) -> dict:
    """One instance's answer: classes, labels, probabilities and the maps (float32 as lists), from its result."""
    import json

    with open(os.path.join(folder, f"{RESULT}.json")) as f:
        summary = json.load(f)
    with np.load(os.path.join(folder, f"{RESULT}.npz")) as z:
        maps = {k: z[k].tolist() for k in z.files if k not in ("image", "probs", "classes")}
        classes = z["classes"].tolist()
        probs = z["probs"][z["classes"]].tolist()
    return {"classes": classes, "labels": [c["label"] for c in summary["classes"]], "probs": probs, "maps": maps,
            "forwards": summary["forwards"], "params": summary["params"]}
