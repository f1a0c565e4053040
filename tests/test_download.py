"""download_file against a local HTTP server: resume, interruption, checksums, offline; the
checkpoint cache's size/sha256 record; moving bad files aside; rank_zero_first alone."""

import dataclasses
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ssast_teach import checkpoints
from ssast_teach.download import (
    DownloadError,
    IntegrityError,
    download_file,
    move_aside,
    rank_zero_first,
)

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


def test_existing_file_with_wrong_checksum_is_moved_aside_and_downloaded_again(server, tmp_path):
    dest = tmp_path / "model.pth"
    dest.write_bytes(b"mine")
    download_file(server.url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and server.ranges == [None]
    (aside,) = tmp_path.glob("model.pth.rejected-*")
    assert aside.read_bytes() == b"mine"  # never deleted


def test_existing_file_with_wrong_size_is_moved_aside_without_hashing(server, tmp_path):
    dest = tmp_path / "model.pth"
    dest.write_bytes(PAYLOAD[:-1])
    download_file(server.url, dest, size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [p.read_bytes() for p in tmp_path.glob("model.pth.rejected-*")] == [PAYLOAD[:-1]]


def test_move_aside_never_overwrites(tmp_path):
    names = []
    for text in ("one", "two", "three"):
        (tmp_path / "f").write_text(text)
        names.append(move_aside(tmp_path / "f"))
    assert [p.read_text() for p in names] == ["one", "two", "three"]
    assert len(set(names)) == 3 and not (tmp_path / "f").exists()


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


def test_checksum_mismatch_moves_the_download_aside(server, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(IntegrityError, match="Checksum mismatch") as info:
        download_file(server.url, dest, sha256="0" * 64, progress=False)
    assert f"expected sha256 {'0' * 64}, found {SHA}" in str(info.value)
    assert not dest.exists()
    assert not dest.with_suffix(".pth.part").exists()
    (aside,) = tmp_path.glob("model.pth.rejected-*")
    assert aside.read_bytes() == PAYLOAD and str(aside) in str(info.value)


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


# --- the checkpoint cache: size and sha256 recorded at the first download ---------------------

NAME = "SSAST-Tiny-Patch-400"


@pytest.fixture
def cache(server, tmp_path, monkeypatch):
    """The registry entry NAME served by ``server``, cached in tmp_path/cache."""
    entry = dataclasses.replace(checkpoints.REGISTRY[NAME], url=server.url)
    monkeypatch.setitem(checkpoints.REGISTRY, NAME, entry)
    monkeypatch.setenv("SSAST_TEACH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_registry_download_records_size_and_sha256(server, cache):
    path = checkpoints.download(NAME, progress=False)
    assert path == cache / f"{NAME}.pth" and path.read_bytes() == PAYLOAD
    record = json.loads((cache / f"{NAME}.pth.json").read_text())
    assert record == {"url": server.url, "size": len(PAYLOAD), "sha256": SHA}
    assert checkpoints.download(NAME, progress=False) == path
    assert checkpoints._resolve(NAME, fetch=False) == path
    assert server.ranges == [None]  # later uses only verify


def test_tampered_cached_checkpoint_is_refused(server, cache):
    path = checkpoints.download(NAME, progress=False)
    path.write_bytes(b"x" + PAYLOAD[1:])  # same size, other bytes
    with pytest.raises(checkpoints.CheckpointNotFoundError) as info:
        checkpoints._resolve(NAME, fetch=False)
    assert f"expected sha256 {SHA}, found " in str(info.value)
    (aside,) = cache.glob(f"{NAME}.pth.rejected-*")
    assert aside.read_bytes()[:1] == b"x" and str(aside) in str(info.value)

    # download() moves a bad file aside too, then downloads it again and checks it.
    path.write_bytes(b"short")
    assert checkpoints.download(NAME, progress=False).read_bytes() == PAYLOAD
    assert server.ranges == [None, None]
    assert len(list(cache.glob(f"{NAME}.pth.rejected-*"))) == 2


def test_a_new_download_must_match_the_record(server, cache):
    checkpoints.download(NAME, progress=False).unlink()
    server.payload = PAYLOAD[::-1]  # the server now sends other bytes
    with pytest.raises(IntegrityError, match=f"expected 102400 bytes|expected sha256 {SHA}"):
        checkpoints.download(NAME, progress=False)
    assert not (cache / f"{NAME}.pth").exists()
    (aside,) = cache.glob(f"{NAME}.pth.rejected-*")
    assert aside.read_bytes() == PAYLOAD[::-1]


def test_a_file_saved_by_hand_is_recorded_and_a_pin_is_checked(server, cache, monkeypatch):
    cache.mkdir()
    (cache / f"{NAME}.pth").write_bytes(PAYLOAD)  # no record: the user's own download
    assert checkpoints._resolve(NAME, fetch=False) == cache / f"{NAME}.pth"
    assert json.loads((cache / f"{NAME}.pth.json").read_text())["sha256"] == SHA
    assert checkpoints.download(NAME, sha256=SHA.upper(), progress=False).is_file()
    assert server.ranges == []
    # A pin the file does not match: moved aside, fetched again (port 9 is not served).
    offline = dataclasses.replace(checkpoints.REGISTRY[NAME], url="http://127.0.0.1:9/x")
    monkeypatch.setitem(checkpoints.REGISTRY, NAME, offline)
    with pytest.raises(DownloadError, match=f"Its sha256 must be {'0' * 64}"):
        checkpoints.download(NAME, sha256="0" * 64, progress=False)
    (aside,) = cache.glob(f"{NAME}.pth.rejected-*")
    assert aside.read_bytes() == PAYLOAD


def test_rank_zero_first_is_a_no_op_without_a_process_group():
    ran = []
    with rank_zero_first("anything"):
        ran.append(1)
    assert ran == [1]
