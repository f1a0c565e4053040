"""download_file against a local HTTP server: resume, interruption, checksums, offline."""

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ssast_teach.download import DownloadError, download_file

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD; the server's attributes make it misbehave on purpose."""

    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        data = srv.payload
        start = 0
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body) + srv.extra_length))
        self.end_headers()
        if srv.cut_after is not None:
            body = body[: srv.cut_after]
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(request):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload = PAYLOAD
    httpd.ranges = []
    httpd.ignore_range = False
    httpd.cut_after = None
    httpd.extra_length = 0
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop():
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    request.addfinalizer(stop)
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/model.pth"
    return httpd


def test_full_download(server, tmp_path):
    dest = tmp_path / "sub" / "model.pth"
    out = download_file(server.url, dest, sha256=SHA, progress=False)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not dest.with_suffix(".pth.part").exists()
    assert server.ranges == [None]


def test_existing_file_needs_no_network(tmp_path):
    dest = tmp_path / "model.pth"
    dest.write_bytes(PAYLOAD)
    # Port 9 on 127.0.0.1 is not served here: any network use would fail.
    assert download_file("http://127.0.0.1:9/x", dest, sha256=SHA, progress=False) == dest


def test_existing_file_with_wrong_checksum_is_kept_and_reported(tmp_path):
    dest = tmp_path / "model.pth"
    dest.write_bytes(b"mine")
    with pytest.raises(DownloadError, match="exists but its sha256"):
        download_file("http://127.0.0.1:9/x", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == b"mine"


def test_resume_from_partial(server, tmp_path):
    dest = tmp_path / "model.pth"
    half = len(PAYLOAD) // 2
    dest.with_suffix(".pth.part").write_bytes(PAYLOAD[:half])
    download_file(server.url, dest, sha256=SHA, progress=False)
    assert server.ranges == [f"bytes={half}-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "model.pth"
    dest.with_suffix(".pth.part").write_bytes(b"x" * 1000)  # would corrupt an append
    download_file(server.url, dest, sha256=SHA, progress=False)
    assert server.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD


def test_unsatisfiable_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "model.pth"
    dest.with_suffix(".pth.part").write_bytes(b"x" * (len(PAYLOAD) + 10))
    download_file(server.url, dest, progress=False)
    assert server.ranges == [f"bytes={len(PAYLOAD) + 10}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_download_keeps_part_and_resumes(server, tmp_path):
    dest = tmp_path / "model.pth"
    part = dest.with_suffix(".pth.part")
    server.cut_after = 30_000
    with pytest.raises(DownloadError, match="resume") as info:
        download_file(server.url, dest, sha256=SHA, progress=False)
    assert not dest.exists()
    assert part.read_bytes() == PAYLOAD[:30_000]
    assert server.url in str(info.value) and str(dest) in str(info.value)

    server.cut_after = None
    download_file(server.url, dest, sha256=SHA, progress=False)
    assert server.ranges == [None, "bytes=30000-"]
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="Checksum mismatch"):
        download_file(server.url, dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert not dest.with_suffix(".pth.part").exists()


def test_content_length_mismatch_raises(server, tmp_path):
    server.extra_length = 100  # announces 100 bytes it never sends
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match=f"stopped at {len(PAYLOAD)} of {len(PAYLOAD) + 100}"):
        download_file(server.url, dest, progress=False)
    assert not dest.exists()


def test_http_error_names_url_and_destination(server, tmp_path):
    dest = tmp_path / "model.pth"
    url = server.url.replace("model.pth", "missing")

    class _NotFound(_Handler):
        def do_GET(self):
            self.send_error(404)

    server.RequestHandlerClass = _NotFound
    with pytest.raises(DownloadError, match="404") as info:
        download_file(url, dest, progress=False)
    assert url in str(info.value) and str(dest) in str(info.value)
    assert not dest.exists()


def test_offline_names_url_and_destination(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/SSAST-Tiny-Patch-400.pth"
    dest = tmp_path / "cache" / "SSAST-Tiny-Patch-400.pth"
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, progress=False, timeout=5)
    message = str(info.value)
    assert url in message and str(dest) in message
    assert not dest.exists()


def test_registry_download_into_cache(server, tmp_path, monkeypatch):
    import dataclasses

    from ssast_teach import checkpoints

    name = "SSAST-Tiny-Patch-400"
    entry = dataclasses.replace(checkpoints.REGISTRY[name], url=server.url)
    monkeypatch.setitem(checkpoints.REGISTRY, name, entry)
    monkeypatch.setenv("SSAST_TEACH_CACHE", str(tmp_path / "cache"))
    path = checkpoints.download(name, progress=False)
    assert path == tmp_path / "cache" / entry.filename
    assert path.read_bytes() == PAYLOAD
