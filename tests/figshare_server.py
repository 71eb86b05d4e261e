"""A local server that speaks figshare's API v2 protocol, for the tests and the benchmark.

What it serves (as figshare does, see ``../shared/FACTS.md``):
``GET /v2/articles/<id>/versions/<v>`` (the inline file list capped at 10),
``GET /v2/articles/<id>/versions/<v>/files?page=&page_size=`` (paged),
``GET /ndownloader/files/<id>`` (302 to a storage URL, or figshare's bot
challenge: 202, empty body, ``x-amzn-waf-action: challenge``) and
``GET /storage/<id>`` (the bytes, sent with ``sendfile``, or half of them before
the connection closes). Faults are queued
per path prefix (e.g. one 500 before the real answer); every request is
logged with its time.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

#: figshare lists at most this many files inside an article.
INLINE_FILES = 10


def md5_path(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fd:
        while chunk := fd.read(4 * 1024**2):
            digest.update(chunk)
    return digest.hexdigest()


class FigshareServer:
    def __init__(self):
        self.articles: dict[tuple[int, int], dict] = {}
        self.files: dict[int, Path] = {}
        self.challenged: set[int] = set()
        #: files whose download breaks off after half of the bytes
        self.broken_off: set[int] = set()
        #: path prefix -> statuses to answer (in order) before the real answer
        self.faults: dict[str, list[int]] = defaultdict(list)
        #: (time.monotonic(), path) of every request
        self.requests: list[tuple[float, str]] = []
        self._next_file_id = 1000
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/v2"

    def start(self) -> FigshareServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def file_entry(
        self, path: Path, name: str | None = None, link_only: bool = False, md5: str | None = None
    ) -> dict:
        """A file as figshare lists it; ``md5`` overrides the real one (a corrupt listing)."""
        self._next_file_id += 1
        file_id = self._next_file_id
        self.files[file_id] = Path(path)
        real_md5 = md5_path(path)
        return {
            "id": file_id,
            "name": name or Path(path).name,
            "size": Path(path).stat().st_size,
            "is_link_only": link_only,
            "download_url": f"{self.url}/ndownloader/files/{file_id}",
            "supplied_md5": md5 if md5 is not None else real_md5,
            "computed_md5": real_md5,
            "mimetype": "application/octet-stream",
        }

    def add_article(
        self,
        article_id: int,
        version: int,
        files: list[dict],
        *,
        title: str = "Reference data set",
        description: str = "<p>Measured with <b>RT-DC</b>.</p>",
        license_name: str = "CC0",
        license_url: str = "https://creativecommons.org/publicdomain/zero/1.0/",
        authors: tuple[str, ...] = ("Ada Lovelace", "Paul Müller"),
        references: tuple[str, ...] = (),
    ) -> str:
        """Serve an article version; returns its DOI."""
        doi = f"10.6084/m9.figshare.{article_id}.v{version}"
        self.articles[(article_id, version)] = {
            "id": article_id,
            "version": version,
            "doi": doi,
            "title": title,
            "description": description,
            "references": list(references),
            "license": {"value": 1, "name": license_name, "url": license_url},
            "authors": [{"id": i, "full_name": name} for i, name in enumerate(authors)],
            "files": files,
        }
        return doi

    def api_request_times(self) -> list[float]:
        return [t for t, path in self.requests if path.startswith("/v2/")]


def _handler(server: FigshareServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            server.requests.append((time.monotonic(), url.path))
            for prefix, statuses in server.faults.items():
                if url.path.startswith(prefix) and statuses:
                    return self._send(statuses.pop(0), b"fault injected by the test")
            if match := re.fullmatch(r"/v2/articles/(\d+)/versions/(\d+)(/files)?", url.path):
                article = server.articles.get((int(match[1]), int(match[2])))
                if article is None:
                    return self._json(404, {"message": "Entity not found: article"})
                if not match[3]:
                    return self._json(200, {**article, "files": article["files"][:INLINE_FILES]})
                query = parse_qs(url.query)
                page = int(query.get("page", ["1"])[0])
                size = int(query.get("page_size", ["10"])[0])
                return self._json(200, article["files"][(page - 1) * size : page * size])
            if match := re.fullmatch(r"/ndownloader/files/(\d+)", url.path):
                file_id = int(match[1])
                if file_id in server.challenged:
                    return self._send(202, b"", {"x-amzn-waf-action": "challenge"})
                return self._send(302, b"", {"Location": f"/storage/{file_id}?token=t"})
            if match := re.fullmatch(r"/storage/(\d+)", url.path):
                path = server.files.get(int(match[1]))
                if path is None:
                    return self._send(404, b"no such file")
                size = path.stat().st_size
                with open(path, "rb") as fd:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    if int(match[1]) in server.broken_off:
                        self.connection.sendfile(fd, count=size // 2)
                        self.close_connection = True
                        return None
                    self.connection.sendfile(fd)
                return None
            return self._send(404, b"unknown path")

        def _json(self, status: int, data) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
