"""``bvae serve``: MLflow's scoring server for a registered or pulled model, behind a guard.

The server is MLflow's own (``mlflow.pyfunc.scoring_server``: the /invocations, /ping and JSON
protocol of ``mlflow models serve``). The guard answers, before MLflow reads a request, the two
requests MLflow answers badly:

- a body larger than the biggest batch the model takes (``BVAE_SERVE_MAX_IMAGES`` images):
  MLflow would parse it for tens of seconds before the model refuses it, or time out with a bare
  504; the guard answers 413 at once;
- JSON nested deeper than a batch of images: MLflow's parser recurses and the server answers a
  bare 500; the guard answers 400.

Everything else (an empty batch, a wrong shape, pixels other than 0/1, too many images) is the
served model's to refuse with a 400 (``tracking/served_model.py``), under either server.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from bvae.errors import BadInput
from bvae.tracking.served_model import IMAGE_SIZE, configured_limit

log = logging.getLogger(__name__)

# ``{"inputs": [image [channel [row [pixel]]]]}`` is 5 deep; the params object adds none beyond
# it. Three levels of slack for the other JSON layouts MLflow accepts (``instances``, ...).
MAX_JSON_DEPTH = 8
BYTES_PER_PIXEL = 8  # generous for JSON numbers: "1.0, " is 5, "0.0e+00," 8
BODY_SLACK = 1 << 20  # brackets, keys, params
SCAN_CHUNK = 1 << 23
DRAIN_LIMIT = 1 << 30  # a refused body up to 1 GiB is read and dropped before the answer


def body_limit(max_images: int) -> int:
    """The largest request body, in bytes, that can hold ``max_images`` images as JSON."""
    return max_images * IMAGE_SIZE * IMAGE_SIZE * BYTES_PER_PIXEL + BODY_SLACK


def json_depth(body: bytes) -> int:
    """How deep ``body``'s arrays and objects nest, without parsing it (in chunks: bounded
    memory for any size). Brackets inside strings count too; a request of images has none."""
    raw = np.frombuffer(body, dtype=np.uint8)
    depth, deepest = 0, 0
    for start in range(0, len(raw), SCAN_CHUNK):
        chunk = raw[start : start + SCAN_CHUNK]
        step = np.zeros(len(chunk), dtype=np.int8)
        step[(chunk == ord("[")) | (chunk == ord("{"))] = 1
        step[(chunk == ord("]")) | (chunk == ord("}"))] = -1
        levels = depth + np.cumsum(step, dtype=np.int64)
        if len(levels):
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
    return deepest


def max_images() -> int:
    """``BVAE_SERVE_MAX_IMAGES`` (the served model's own limit), checked before the server starts."""
    try:
        return configured_limit()
    except Exception as error:  # noqa: BLE001 - MLflow's exception type: the served model raises it
        raise BadInput(str(error)) from None


def request_problem(body: bytes, images: int) -> tuple[int, str] | None:
    """The HTTP status and message for a body the guard refuses, or ``None`` to pass it on."""
    if len(body) > body_limit(images):
        return 413, too_large(len(body), images)
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        return 400, (
            f"the JSON nests {depth} levels deep; a batch of images is 5 "
            '({"inputs": [image [channel [row [pixel]]]]}), so at most '
            f"{MAX_JSON_DEPTH} are accepted"
        )
    return None


def too_large(size: int, images: int) -> str:
    return (
        f"the request body is {size:,} bytes; this server takes at most {body_limit(images):,} "
        f"(the JSON of {images} images). Send the images in smaller requests."
    )


class RequestGuard:
    """ASGI middleware: reads an ``/invocations`` body (stopping once it is too large), refuses
    it with one JSON error in MLflow's shape, or hands the body on to ``app`` unchanged."""

    def __init__(self, app, images: int):
        self.app = app
        self.images = images
        self.max_bytes = body_limit(images)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != "/invocations":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            if await _drain(receive):
                await _refuse(send, 413, too_large(int(declared), self.images))
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                size = len(body)
                del body[:]
                if message.get("more_body") and not await _drain(receive):
                    return None
                return await _refuse(send, 413, too_large(size, self.images))
            if not message.get("more_body"):
                break
        data = bytes(body)
        problem = request_problem(data, self.images)
        if problem:
            return await _refuse(send, *problem)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": data, "more_body": False}

        return await self.app(scope, replay, send)


async def _drain(receive, most: int = DRAIN_LIMIT) -> bool:
    """Read and drop the rest of a refused body, so that the client, still sending, reads the
    answer (closing early resets its connection instead). False if the client went away."""
    dropped = 0
    while dropped <= most:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        dropped += len(message.get("body", b""))
        if not message.get("more_body"):
            return True
    return True  # past ``most``: answer anyway; the server then closes the connection


async def _refuse(send, status: int, message: str) -> None:
    content = json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def served_model_uri(reference: str) -> str:
    """An MLflow model URI for a pulled folder (its ``mlflow_model/``), an MLflow model folder,
    ``models:/…``, or ``NAME@ALIAS`` / ``NAME/VERSION`` resolved in the registry."""
    path = Path(reference)
    if (path / "mlflow_model" / "MLmodel").is_file():
        return str(path / "mlflow_model")
    if (path / "MLmodel").is_file():
        return str(path)
    if path.exists():
        raise BadInput(f"{path} holds no MLflow model: give a folder `bvae pull` wrote, or NAME@ALIAS")
    if reference.startswith("models:/"):
        return reference
    from bvae.tracking import registry

    version = registry.resolve(reference)  # names the existing models or aliases when wrong
    return f"models:/{version.name}/{version.version}"


def serve(reference: str, host: str, port: int) -> None:
    """Load the model and serve it until interrupted."""
    import uvicorn
    from mlflow.pyfunc import load_model, scoring_server

    images = max_images()
    uri = served_model_uri(reference)
    app = RequestGuard(scoring_server.init(load_model(uri)), images)
    log.info(
        "serving %s at http://%s:%d/invocations (at most %d images, %s bytes a request)",
        uri,
        host,
        port,
        images,
        f"{body_limit(images):,}",
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
