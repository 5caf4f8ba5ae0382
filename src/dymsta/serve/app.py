"""The FastAPI app of ``dymsta serve``: a JSON API and one web page over a loaded :class:`Predictor`.

Routes (docs/serve.md):

    GET  /             the page (static/index.html, app.js, style.css; shipped in the package, no CDN)
    GET  /healthz      {"status": "ok", "model": name, ...}
    GET  /v1/model     class names, backbone, frames, calibration temperature, the run's test metrics, limits
    POST /v1/predict   multipart field ``file``; query top_k, timeline, window, stride, explain
                       -> the object ``dymsta predict --json`` prints, plus ``timeline`` and ``attention``
    GET  /v1/stream    a stream URL on the --allow-source list, classified as it arrives (server-sent events)
    WS   /v1/stream/camera  the browser's camera (MediaRecorder pieces in, each window's result out); serve/live.py
    GET  /docs         the API's Swagger UI, from the swagger-ui-bundle-v2 package (no CDN)

A prediction takes a place in the bounded pool (503 when none is free), streams the upload into a private
temporary folder under the size cap (413), runs :meth:`Predictor.predict_files` and, when asked,
:meth:`Predictor.timeline` and :meth:`Predictor.explain` on a worker thread within the time limit (504), and
removes the folder whatever happens. Errors are ``{"error": "one line"}``. Every prediction request is logged
with its size, time and outcome, never its content.
"""

from __future__ import annotations

import base64
import copy
import hmac
import json
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from dymsta import __version__
from dymsta.engine.predict import Predictor, resolve_checkpoint
from dymsta.hardware import set_threads
from dymsta.serve.live import add_live_routes
from dymsta.serve.upload import FIELD, Upload, UploadError, receive_upload
from dymsta.serve.worker import InferencePool, QueueFull, SerialRunner, TimeLimit
from dymsta.utils import get_logger

__all__ = ["BadVideo", "ServeConfig", "create_app", "describe_model"]

log = get_logger(__name__)

STATIC = files("dymsta.serve") / "static"
_PAGE_HEADERS = {  # the page loads only its own files; results' images come as data: URLs
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class ServeConfig:
    """How ``dymsta serve`` takes requests."""

    max_upload_mb: float = 200.0  # largest request body, MiB: a 10-minute 320x240 MPEG-4 clip is ~30 MiB
    token: str | None = None  # bearer token for /v1/*; None: open (the default host is loopback)
    workers: int = 2  # jobs at once: decoding overlaps while the model takes one batch at a time
    queue: int = 8  # requests that may wait beyond the running ones; one more gets 503
    timeout_s: float = 120.0  # per request, from the end of its upload: a 10-minute timeline takes ~40 s on 2 cores
    allow_partial: bool = False  # answer for videos below data.min_decoded_fraction too (as predict --allow-partial)
    tmp_dir: str | None = None  # parent of each request's private folder (None: the system's temporary folder)
    allowed_sources: tuple[str, ...] = ()  # stream URL prefixes GET /v1/stream may open (none: URLs refused, 403)
    max_streams: int = 2  # live streams (URL or camera) at once; one more gets 503

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class BadVideo(Exception):
    """An upload that does not decode into a usable clip (HTTP 400); ``str(e)`` is one line naming the file."""


# ------------------------------------------------------------------------------------------------ the app


def create_app(predictor: Predictor, config: ServeConfig | None = None) -> FastAPI:
    """The app serving ``predictor`` (loaded once, shared by the worker threads).

    Args:
        predictor: the model (:meth:`Predictor.from_checkpoint`). The app works on a shallow copy whose runner
            takes one call at a time; ``predictor`` itself is left as it is.
        config: limits, token and temporary folder (:class:`ServeConfig`).
    """
    config = config or ServeConfig()
    if config.max_upload_bytes < 1:
        raise ValueError(f"--max-upload-mb must be > 0, got {config.max_upload_mb}")
    lock = threading.Lock()  # one model call at a time: predictions, timelines and attention maps share it
    served = copy.copy(predictor)
    served.runner = SerialRunner(predictor.runner, lock)
    pool = InferencePool(workers=config.workers, queue=config.queue, timeout=config.timeout_s)
    info = describe_model(predictor)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # served below from the package's assets: FastAPI's default page loads them from a CDN
        redoc_url=None,
        title="dymsta serve",
        version=__version__,
        description=f"Video classification with the dymsta model **{info['name']}**. See docs/serve.md.",
    )
    app.state.pool, app.state.config, app.state.info = pool, config, info
    app.add_middleware(_RequestLog)
    _add_error_handlers(app)
    require_token = _token_check(config.token)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _add_offline_docs(app)
    add_live_routes(
        app, served, allowed=config.allowed_sources, max_streams=config.max_streams,
        token_ok=_token_matches(config.token), require_token=require_token,
    )  # fmt: skip

    @app.get("/healthz", summary="liveness, and what the page needs before its first call")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": info["name"],
            "token_required": config.token is not None,
            "max_upload_bytes": config.max_upload_bytes,
            "busy": pool.held,
            "capacity": pool.places,
        }

    @app.get("/v1/model", dependencies=[Depends(require_token)], summary="the model: classes, inputs, metrics")
    def model() -> dict[str, Any]:
        limits = {"max_upload_bytes": config.max_upload_bytes, "workers": config.workers, "queue": config.queue}
        limits.update(timeout_s=config.timeout_s, allow_partial=config.allow_partial)
        return {**info, "limits": limits}

    @app.post(
        "/v1/predict",
        dependencies=[Depends(require_token)],
        summary="classify an uploaded video",
        openapi_extra=_UPLOAD_SCHEMA,
        responses={s: {"description": d, "model": _ErrorBody} for s, d in _ERRORS.items()},
    )
    async def predict(
        request: Request,
        top_k: int = Query(5, ge=1, le=1000, description="predictions returned, best first"),
        timeline: bool = Query(False, description="also classify sliding windows (segments, windows, plot)"),
        window: float = Query(2.0, gt=0, le=3600, description="timeline window, seconds"),
        stride: float = Query(1.0, gt=0, le=3600, description="timeline stride, seconds"),
        explain: bool = Query(False, description="also return the attention maps over the frames, as a PNG"),
    ) -> JSONResponse:
        options = {"top_k": top_k, "timeline": timeline, "window": window, "stride": stride, "explain": explain}
        size = 0
        try:
            with pool.admit() as admission:
                folder = Path(tempfile.mkdtemp(prefix="dymsta-serve-", dir=config.tmp_dir))
                admission.on_close(lambda: shutil.rmtree(folder, ignore_errors=True))
                upload = await receive_upload(request, folder, limit=config.max_upload_bytes)
                size = upload.size
                result = await admission.run(_infer, served, lock, upload, options, config.allow_partial)
        except (QueueFull, TimeLimit, UploadError, BadVideo) as e:
            request.state.log = f"{size / 2**20:.2f} MiB  {e}"
            headers = {"Retry-After": "1"} if isinstance(e, QueueFull) else None
            return JSONResponse({"error": str(e)}, status_code=_status_of(e), headers=headers)
        top = result["predictions"][0]
        request.state.log = f"{size / 2**20:.2f} MiB  {top['label']} ({top['score']:.3f})"
        return JSONResponse(result)

    return app


def describe_model(predictor: Predictor) -> dict[str, Any]:
    """What ``GET /v1/model`` tells of a model: its name, classes, inputs, calibration and test metrics."""
    ckpt, run_dir = resolve_checkpoint(predictor.source) if predictor.source else (Path("model"), Path("."))
    cfg = getattr(predictor.model, "cfg", None)
    summary = run_dir / "summary.json"
    metrics = None
    if ckpt.parent.name == "checkpoints" and summary.is_file():
        try:
            metrics = json.loads(summary.read_text(encoding="utf-8")).get("test")
        except (OSError, ValueError):
            log.warning("%s: unreadable; /v1/model gives no test metrics", summary)
    spec = predictor.spec
    return {
        "name": run_dir.name if ckpt.parent.name == "checkpoints" else ckpt.stem,
        "format": "onnx" if ckpt.suffix.lower() == ".onnx" else "safetensors",
        "arch": getattr(cfg, "arch", None),
        "backbone": getattr(cfg, "backbone", None),
        "classes": list(predictor.class_names),
        "num_classes": len(predictor.class_names),
        "num_frames": spec.num_frames,
        "size": spec.size,
        "modalities": list(spec.modalities),
        "calibration_temperature": predictor.temperature,
        "threshold": predictor.threshold,
        "attention_maps": bool(cfg is not None and getattr(cfg, "attention", False) and cfg.arch == "dymsta"),
        "test_metrics": metrics,
    }


# ------------------------------------------------------------------------------------------- one request


def _infer(
    predictor: Predictor, lock: threading.Lock, upload: Upload, options: dict[str, Any], allow_partial: bool
) -> dict[str, Any]:
    """On a worker thread: the ``dymsta predict --json`` object of the upload, plus its timeline and attention.

    Raises:
        BadVideo: the file does not decode, or decodes less than the run's ``data.min_decoded_fraction`` of its
            frames (unless ``allow_partial``): the datasets' rule, as ``dymsta predict``.
    """
    path, folder = upload.path, upload.path.parent
    (result,) = predictor.predict_files([path], top_k=options["top_k"], workers=0, allow_partial=allow_partial)
    result = _renamed(result, str(path), upload.name)
    if result["error"]:
        raise BadVideo(result["error"])
    if options["timeline"]:
        plot = folder / "timeline.png"
        t = predictor.timeline(
            path, window=options["window"], stride=options["stride"], top_k=min(options["top_k"], 3), plot=plot
        )
        if t["error"]:
            raise BadVideo(_renamed(t, str(path), upload.name)["error"])
        keep = ("duration_s", "fps", "window_s", "stride_s", "segments", "windows")
        result["timeline"] = {k: t[k] for k in keep}
        result["timeline"]["plot_png"] = _base64(plot) if plot.is_file() else None
    if options["explain"]:
        with lock:
            image = predictor.explain(path, folder)
        result["attention"] = {"image_png": _base64(image)} if image is not None else None
        if image is None:
            result["warnings"].append(f"{upload.name}: attention maps need a DyMSTA-Net checkpoint with attention")
    return result


def _renamed(value: Any, old: str, new: str) -> Any:
    """``value`` with the temporary path ``old`` replaced by the client's name ``new`` in every string."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_renamed(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _renamed(v, old, new) for k, v in value.items()}
    return value


def _base64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


# ------------------------------------------------------------------------------- tokens, errors and logs


def _token_matches(token: str | None) -> Callable[[str | None], bool]:
    """Whether a given token is the server's (always, when it has none)."""
    expected = token.encode() if token else None
    return lambda given: expected is None or (given is not None and hmac.compare_digest(given.encode(), expected))


def _token_check(token: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 unless the request carries ``Authorization: Bearer <token>`` (None: no check)."""
    expected = token.encode() if token else None

    def require_token(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            what = "wrong" if given else "missing"
            raise HTTPException(
                401, f"token {what}: send the header 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"}
            )

    return require_token


def _status_of(e: Exception) -> int:
    if isinstance(e, UploadError):
        return e.status
    return {QueueFull: 503, TimeLimit: 504, BadVideo: 400}[type(e)]


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the ``swagger-ui-bundle-v2`` package's files, so it works offline; without that
    package, a one-line JSON 404 that names it."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is not None and (Path(str(swagger_ui_path)) / "swagger-ui-bundle.js").is_file():
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        def docs() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{app.title}: API",
                swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                swagger_css_url="/docs-assets/swagger-ui.css",
                swagger_favicon_url="/docs-assets/favicon-32x32.png",
                swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
            )

        return

    @app.get("/docs", include_in_schema=False)
    def no_docs() -> JSONResponse:
        message = "the /docs page needs pip install swagger-ui-bundle-v2 (or dymsta[serve]); /openapi.json works"
        return JSONResponse({"error": message}, status_code=404)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": "one line"}``: HTTP errors (401, 404, 405) and bad parameters (422)."""

    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    async def bad_parameters(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path", "header"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"error": "; ".join(parts) or "bad parameters"}, status_code=422)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_parameters)


class _ErrorBody(BaseModel):
    """``{"error": "one line"}`` (for the OpenAPI schema)."""

    error: str


_ERRORS = {
    400: "not a video, or it cannot be decoded (or only in part)",
    401: "token missing or wrong (when the server has one)",
    413: "over the size cap (refused while streaming)",
    422: "bad parameters, or no multipart field 'file'",
    503: "the queue is full; retry shortly",
    504: "over the time limit",
}

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary", "description": "the video"}},
                }
            }
        },
    }
}


class _RequestLog:
    """ASGI middleware: one log line per request (method, path, status, seconds, and what the route adds in
    ``request.state.log``: a prediction's upload size and label or error). Never the body, query or headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            extra = scope.get("state", {}).get("log")
            log.info(
                "%s %s %d %.2f s%s",
                scope["method"],
                scope["path"],
                status[0],
                time.perf_counter() - started,
                f"  {extra}" if extra else "",
            )


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> None:
    """Load ``model`` (a run folder, a ``.safetensors`` or an ``.onnx`` file) once and serve it until stopped.

    Args:
        model: the model, as :meth:`Predictor.from_checkpoint` takes it.
        host, port: where to listen (loopback by default; another address without a token is logged as a warning).
        config: limits and token (:class:`ServeConfig`).
        device: ``auto``, ``cpu``, ``cuda``.
        threads: PyTorch intra-op threads (None: PyTorch's default, one per core: the model runs one batch at a
            time, so its call may use every core).
    """
    import ipaddress

    import uvicorn

    config = config or ServeConfig()
    set_threads(threads or 0, what="--threads")
    predictor = Predictor.from_checkpoint(model, device=device)
    app = create_app(predictor, config)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and config.token is None:
        log.warning("listening on %s without --token: anyone who reaches this address can use the model", host)
    log.info(
        "serving %s (%d classes) on http://%s:%d  workers %d, queue %d, limit %g s, uploads up to %g MiB",
        app.state.info["name"],
        app.state.info["num_classes"],
        host,
        port,
        config.workers,
        config.queue,
        config.timeout_s,
        config.max_upload_mb,
    )
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)
