"""`bvae serve`'s guard in front of MLflow's scoring server, as an ASGI app in-process (the
real servers are in test_registry)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import warnings

import pytest

from bvae.serving import MAX_JSON_DEPTH, RequestGuard, body_limit, json_depth, request_problem
from bvae.tracking import served_model


def test_json_depth_counts_arrays_and_objects_across_chunks(monkeypatch):
    assert json_depth(b"") == 0
    assert json_depth(b'{"inputs": [[[[0, 1]]]], "params": {"reconstruction": true}}') == 5
    monkeypatch.setattr("bvae.serving.SCAN_CHUNK", 3)  # depth carried from chunk to chunk
    assert json_depth(b"[[[[[]]]]] [[]]") == 5


def test_the_guard_refuses_deep_and_large_bodies_and_passes_the_rest():
    images = 2
    assert request_problem(b'{"inputs": [[[[0]]]]}', images) is None
    status, message = request_problem(b"[" * (MAX_JSON_DEPTH + 1), images)
    assert status == 400 and f"nests {MAX_JSON_DEPTH + 1} levels deep" in message
    status, message = request_problem(b" " * (body_limit(images) + 1), images)
    assert status == 413 and "the JSON of 2 images" in message


def call(guard: RequestGuard, chunks: list[bytes], declared: int | None = None):
    """One POST through ``guard`` in ``chunks``: what the client gets and what the app got."""
    received: list[bytes] = []
    sent: list[dict] = []

    async def app(scope, receive, send):
        message = await receive()
        received.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard.app = app
    last = len(chunks) - 1
    messages = [{"type": "http.request", "body": c, "more_body": i < last} for i, c in enumerate(chunks)]
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/invocations", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"] if sent else None
    answer = json.loads(sent[1]["body"]) if len(sent) > 1 else None
    return status, answer, received, messages


@pytest.mark.parametrize("declared", [None, "exact"])
def test_a_body_in_chunks_reaches_the_app_whole(declared):
    chunks = [b'{"inputs": [[[', b"[0, 1]", b"]]]}"]
    size = sum(map(len, chunks)) if declared else None
    status, _, received, _ = call(RequestGuard(None, 1), chunks, size)
    assert status == 200 and received == [b"".join(chunks)]


@pytest.mark.parametrize("declared", [False, True])
def test_a_refused_body_is_read_to_its_end_before_the_answer(declared):
    """A client still sending reads the 413 (closing early would reset its connection)."""
    limit = body_limit(1)
    chunks = [b" " * (limit // 2)] * 3 + [b"]"]
    size = sum(map(len, chunks)) if declared else None
    status, answer, received, left = call(RequestGuard(None, 1), chunks, size)
    assert status == 413 and "at most" in answer["message"]
    assert received == [] and left == []  # the app never ran; every chunk was read


def test_the_served_model_loads_without_mlflow_warnings():
    """MLflow runs the served model's file wherever the model is logged or loaded; its class
    printed a coloured "Add type hints to the `predict` method" UserWarning each time."""
    spec = importlib.util.spec_from_file_location("served_copy", served_model.__file__)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.loader.exec_module(module)
    assert not hasattr(module.ServedBetaVAE.predict, "__wrapped__")  # MLflow left it as written
