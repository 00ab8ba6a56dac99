"""A local stand-in for the Hugging Face Hub's file endpoints, on 127.0.0.1.

It serves what ``huggingface_hub`` asks for when it lists and downloads a
model repository: ``GET /api/models/{repo}/tree/{revision}`` (the file list,
with LFS SHA-256s or git blob ids) and ``HEAD``/``GET
/{repo}/resolve/{revision}/{path}`` (ETag, X-Repo-Commit, sizes, and
``Range`` requests for resumed downloads). ``requests`` records what was
asked, ``wrong_sha`` makes the listed checksum of a file wrong, ``drop_once``
(path -> bytes) cuts the first download of a file after that many bytes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubStandIn:
    def __init__(self, repos: dict[str, dict[str, bytes]], lfs_min: int = 64) -> None:
        self.repos = repos
        self.lfs_min = lfs_min  # files at least this big are "LFS" files (SHA-256 listed)
        self.requests: list[tuple[str, str, str | None]] = []
        self.wrong_sha: set[str] = set()
        self.drop_once: dict[str, int] = {}
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                standin._serve(self, body=False)

            def do_GET(self) -> None:
                standin._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def _entry(self, path: str, data: bytes) -> dict[str, object]:
        git = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        entry: dict[str, object] = {"type": "file", "path": path, "size": len(data), "oid": git}
        if len(data) >= self.lfs_min:
            sha = hashlib.sha256(data).hexdigest()
            if path in self.wrong_sha:
                sha = "0" * 64
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        return entry

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[0] == "api" and parts[1] == "models" and parts[4] == "tree":
            repo = f"{parts[2]}/{parts[3]}"
            files = self.repos.get(repo)
            if files is None:
                return self._send(h, 404, b'{"error": "Repository not found"}', body)
            listing = [self._entry(p, d) for p, d in sorted(files.items())]
            return self._send(h, 200, json.dumps(listing).encode(), body,
                              {"Content-Type": "application/json"})
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, rel = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
            data = self.repos.get(repo, {}).get(rel)
            if data is None:
                return self._send(h, 404, b"Entry not found", body,
                                  {"X-Error-Code": "EntryNotFound"})
            entry = self._entry(rel, data)
            lfs = entry.get("lfs")
            etag = lfs["oid"] if isinstance(lfs, dict) else entry["oid"]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            rng = h.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(h, 206, data[start:], body, headers)
            cut = self.drop_once.pop(rel, None) if body else None
            if cut is not None:  # a connection that breaks mid-transfer
                h.send_response(200)
                for k, v in headers.items():
                    h.send_header(k, v)
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data[:cut])
                h.wfile.flush()
                h.close_connection = True
                return None
            return self._send(h, 200, data, body, headers)
        self._send(h, 404, b"not found", body)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, data: bytes, body: bool,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
