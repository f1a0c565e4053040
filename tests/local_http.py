"""A file server on 127.0.0.1 for the download tests: serves fixed bytes, counts the requests."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class FileServer:
    """``with FileServer({"/a.zip": b"..."}) as server``: ``server.url("/a.zip")``,
    ``server.requests`` (the paths asked for, in order); ``server.files`` may change meanwhile."""

    def __init__(self, files: dict[str, bytes]):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.files = dict(files)
        self._httpd.requests = []
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def files(self) -> dict[str, bytes]:
        return self._httpd.files

    @property
    def requests(self) -> list[str]:
        return self._httpd.requests

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
