"""The official-download path against a real HTTP server on 127.0.0.1 serving a small npz."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from bvae.cli import main
from bvae.config import DataConfig
from bvae.data import factors, npz, render
from bvae.data.download import (
    ChecksumMismatchError,
    HTTPStatusError,
    TruncatedError,
    UnreachableError,
    download_verified,
)
from bvae.errors import EXIT_BAD_INPUT, EXIT_RETRY_LATER
from bvae.stages.download import read_record, run_download
from tests.conftest import refused_url


def small_npz_bytes(tmp_path: Path, first_image: int) -> bytes:
    classes = factors.all_classes()[first_image : first_image + 2048]
    path = tmp_path / f"small-{first_image}.npz"
    images = render.render_images(classes)
    npz.write_npz(
        path,
        [images],
        len(images),
        classes,
        factors.values_from_classes(classes),
        factors.metadata(),
    )
    return path.read_bytes()


class DSpritesServer:
    """Serves a payload with Range support, plus routes that fail in each way a mirror can."""

    def __init__(self, payload: bytes, wrong_payload: bytes):
        self.payload, self.wrong_payload = payload, wrong_payload
        self.requests: list[tuple[str, str | None]] = []
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                hit = server.hits[self.path] = server.hits.get(self.path, 0) + 1
                route = self.path.strip("/").removesuffix(".npz")
                body = server.payload
                if route == "missing":
                    return self.send_error(404, "Not Found")
                if route == "flaky" and hit == 1:
                    return self.send_error(503, "Service Unavailable")
                if route == "wrong":
                    body = server.wrong_payload
                start = 0
                if range_header and route != "always-truncated":
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                truncate = route == "always-truncated" or (route == "truncate-once" and hit == 1)
                self.wfile.write(body[start : len(body) // 2] if truncate else body[start:])
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{route}.npz"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def payloads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("payload")
    return small_npz_bytes(folder, 0), small_npz_bytes(folder, 4096)


@pytest.fixture
def server(payloads):
    with DSpritesServer(*payloads) as running:
        yield running


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fetch(server, route, out, expected, **kwargs):
    options = {"timeout_s": 5, "retries": 2, "backoff_s": 0.01, "show_progress": False} | kwargs
    return download_verified([server.url(route)], out, expected, **options)


def test_success_verifies_and_lands_atomically(server, payloads, tmp_path):
    out = tmp_path / "raw" / "dsprites.npz"
    result = fetch(server, "ok", out, md5(payloads[0]))
    assert out.read_bytes() == payloads[0]
    assert result.md5 == md5(payloads[0]) and result.sha256 == hashlib.sha256(payloads[0]).hexdigest()
    assert not out.with_name("dsprites.npz.part").exists()
    assert npz.count_images(out) == 2048


def test_checksum_mismatch_leaves_nothing(server, payloads, tmp_path):
    out = tmp_path / "dsprites.npz"
    with pytest.raises(ChecksumMismatchError, match="MD5"):
        fetch(server, "wrong", out, md5(payloads[0]))
    assert not out.exists() and not out.with_name("dsprites.npz.part").exists()


def test_404_is_final_and_leaves_nothing(server, payloads, tmp_path):
    out = tmp_path / "dsprites.npz"
    with pytest.raises(HTTPStatusError, match="404"):
        fetch(server, "missing", out, md5(payloads[0]))
    assert not out.exists()
    assert sum(1 for path, _ in server.requests if path == "/missing.npz") == 1  # no retries on 4xx


def test_connection_refused(payloads, tmp_path):
    out = tmp_path / "dsprites.npz"
    with pytest.raises(UnreachableError, match="cannot connect") as caught:
        download_verified(
            [refused_url()], out, md5(payloads[0]), retries=1, backoff_s=0.01, show_progress=False
        )
    assert "data.source: procedural" in str(caught.value)
    assert not out.exists()


def test_truncated_body_is_an_error_and_never_lands(server, payloads, tmp_path):
    out = tmp_path / "dsprites.npz"
    with pytest.raises(TruncatedError, match="of"):
        fetch(server, "always-truncated", out, md5(payloads[0]), retries=1)
    assert not out.exists()


def test_truncation_resumes_with_a_range_request(server, payloads, tmp_path):
    out = tmp_path / "dsprites.npz"
    fetch(server, "truncate-once", out, md5(payloads[0]))
    assert out.read_bytes() == payloads[0]
    ranges = [header for path, header in server.requests if path == "/truncate-once.npz"]
    assert ranges == [None, f"bytes={len(payloads[0]) // 2}-"]


def test_server_error_is_retried_then_falls_through_to_next_mirror(server, payloads, tmp_path):
    out = tmp_path / "dsprites.npz"
    fetch(server, "flaky", out, md5(payloads[0]))
    assert server.hits["/flaky.npz"] == 2
    out.unlink()
    download_verified(
        [server.url("missing"), server.url("ok")],
        out,
        md5(payloads[0]),
        retries=0,
        show_progress=False,
    )
    assert out.read_bytes() == payloads[0]


def test_official_stage_records_its_source(server, payloads, tmp_path):
    out = tmp_path / "dsprites.npz"
    config = DataConfig(source="official", urls=(server.url("ok"),), md5=md5(payloads[0]), backoff_s=0)
    record = run_download(config, out, show_progress=False)
    assert record["source"] == "official" and record["url"] == server.url("ok")
    assert read_record(out)["sha256"] == hashlib.sha256(payloads[0]).hexdigest()


def test_official_stage_does_not_fall_back(payloads, tmp_path):
    config = DataConfig(source="official", urls=(refused_url(),), retries=0, backoff_s=0)
    with pytest.raises(UnreachableError):
        run_download(config, tmp_path / "dsprites.npz", show_progress=False)
    assert not (tmp_path / "dsprites.npz").exists()


def test_auto_fell_back_loudly_and_recorded_why(full_npz):
    record = read_record(full_npz)
    assert record["requested"] == "auto" and record["source"] == "procedural"
    assert "cannot connect" in record["fallback_reason"]


# The procedural npz's SHA-256 as first recorded: every render since, in any session and on
# any machine of this stack, must give these bytes (DVC's run-cache and remotes rely on it).
# If the renderer is changed on purpose, record the new digest here and say so in the commit.
PROCEDURAL_NPZ_SHA256 = "4ff3424eda56a9684c9c154a6e3d4d296908bc53ba154edb23ba70c2d12a6fb1"


def test_procedural_npz_is_byte_deterministic(full_npz):
    from bvae.fileio import file_digest

    assert file_digest(full_npz) == read_record(full_npz)["sha256"] == PROCEDURAL_NPZ_SHA256


def test_pickled_metadata_needs_a_verified_checksum(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, imgs=np.zeros((1, 64, 64), np.uint8), metadata=np.array({"a": 1}, dtype=object))
    with pytest.raises(npz.NpzFormatError, match="refusing to unpickle"):
        npz.read_metadata(path)
    assert npz.read_metadata(path, checksum_verified=True) == {"a": 1}


@pytest.mark.parametrize(
    ("route", "exit_code"),
    [
        ("missing", EXIT_BAD_INPUT),  # 404: final, asking again will not help
        ("wrong", EXIT_BAD_INPUT),  # other bytes than the checksum names: final
        (None, EXIT_RETRY_LATER),  # refused connection: retry later
    ],
)
def test_bvae_download_exit_code_says_whether_to_retry(
    server, payloads, tmp_path, monkeypatch, capsys, route, exit_code
):
    """A 404 and a checksum mismatch once exited 75 and a scheduler retried them."""
    url = server.url(route) if route else refused_url()
    params = {"data": {"source": "official", "urls": [url], "md5": md5(payloads[0]), "retries": 0}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert main(["download", "-q", "--out", "raw/dsprites.npz"]) == exit_code
    message = capsys.readouterr().err.strip()
    assert message.startswith("bvae download: error") and "Traceback" not in message
    assert not (tmp_path / "raw/dsprites.npz").exists()


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """A builtin KeyError once printed as 'error: ...' with exit 2: a bug hidden as bad input."""
    import bvae.stages.download

    def broken(*args, **kwargs):
        raise KeyError("imgs")

    monkeypatch.setattr(bvae.stages.download, "run_download", broken)
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyError, match="imgs"):  # uncaught: Python prints it and exits 1
        main(["download", "-q"])
