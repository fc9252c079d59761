"""A fake Hugging Face Hub on loopback, speaking just enough of the HTTP API for `HfApi` uploads.

The real client (huggingface_hub 2.x) talks to it unmodified once the endpoint points here, so tests exercise the
actual requests: create repo, create branch, preupload (always "regular": contents arrive base64 inline in the
commit, no LFS/Xet), the NDJSON commit, plus whoami, repo info, README YAML validation and the agent-harness
registry that the client's user-agent code fetches (answered 404). Every request is recorded; anything else is
answered 501 and listed in `unexpected`, so a failing test names the route that is missing.

    with FakeHub() as hub:
        HfApi(endpoint=hub.url, token="hf_fake").upload_folder(...)
        hub.files("me/tiny")  # {path: bytes} on main
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
DEFAULT_USER = "me"

_REPO_ROUTE = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
    r"(?:/(?P<action>preupload|commit|branch|revision)/(?P<rev>[^/]+))?$"
)


def git_blob_oid(content: bytes) -> str:
    """The git blob sha1 the Hub reports as a file's oid; the client compares it to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lowercased
    body: bytes


@dataclass
class Commit:
    oid: str
    revision: str
    summary: str
    description: str
    paths: list[str]
    parent: str | None


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": hashlib.sha1(uuid.uuid4().bytes).hexdigest()})
    commits: list[Commit] = field(default_factory=list)


class _HttpError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


class FakeHub:
    """Context manager: a ThreadingHTTPServer on 127.0.0.1 (free port) served from a daemon thread."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.unexpected: list[str] = []
        self.errors: list[str] = []  # tracebacks of handler crashes (answered 400, never retried by the client)
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""  # base URL, e.g. http://127.0.0.1:54321, once started

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what arrived --------------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[str]:
        """'METHOD /path' of every request, in arrival order."""
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        return dict(self.repo(repo_id, repo_type).branches[revision])

    # -- routes (called with the lock held) ----------------------------------------------------------------------

    def _repo_url(self, repo: FakeRepo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.url}/{prefix}{repo.repo_id}"

    def _find_repo(self, repo_type: str, repo_id: str) -> FakeRepo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise _HttpError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    @staticmethod
    def _branch(repo: FakeRepo, revision: str) -> str:
        if revision in repo.branches:
            return revision
        for branch, head in repo.heads.items():  # a commit oid resolves to the branch it heads
            if head == revision:
                return branch
        raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _create_repo(self, body: dict) -> tuple[int, dict]:
        name, organization = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        repo_id = f"{organization or DEFAULT_USER}/{name}"
        private = body.get("visibility") == "private" or body.get("private") is True
        existing = self.repos.get((repo_type, repo_id))
        if existing is not None:
            return 409, {"error": f"You already created this {repo_type} repo", "url": self._repo_url(existing)}
        repo = FakeRepo(repo_id=repo_id, repo_type=repo_type, private=private)
        self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": self._repo_url(repo), "name": repo_id, "id": uuid.uuid4().hex}

    def _create_branch(self, repo: FakeRepo, branch: str, body: dict) -> tuple[int, dict]:
        if branch in repo.branches:
            raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
        source = self._branch(repo, body.get("startingPoint") or "main")
        repo.branches[branch] = dict(repo.branches[source])
        repo.heads[branch] = repo.heads[source]
        return 200, {}

    def _preupload(self, repo: FakeRepo, revision: str, body: dict) -> tuple[int, dict]:
        existing = repo.branches[self._branch(repo, revision)]
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_oid(existing[f["path"]]) if f["path"] in existing else None,
            }
            for f in body.get("files", [])
        ]
        return 200, {"files": files, "commitOid": repo.heads[self._branch(repo, revision)]}

    def _commit(self, repo: FakeRepo, revision: str, raw: bytes, query: dict) -> tuple[int, dict]:
        if query.get("create_pr"):
            raise _HttpError(400, "fake hub: pull requests are not implemented")
        branch = self._branch(repo, revision)
        lines = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.heads[branch]:
            raise _HttpError(412, f"A commit has happened since. Parent {parent} is not the head of {branch}")
        files = dict(repo.branches[branch])
        paths = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode("utf-8")
                files[value["path"]] = data
                paths.append(value["path"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            elif key == "lfsFile":
                raise _HttpError(400, f"fake hub: LFS is not implemented (file {value.get('path')})")
            else:
                raise _HttpError(400, f"fake hub: unknown commit operation {key!r}")
        oid = hashlib.sha1(f"{repo.heads[branch]}\n{header.get('summary')}\n{uuid.uuid4()}".encode()).hexdigest()
        repo.branches[branch] = files
        repo.heads[branch] = oid
        repo.commits.append(
            Commit(oid, branch, header.get("summary", ""), header.get("description", ""), paths, parent)
        )
        return 200, {
            "success": True,
            "commitOid": oid,
            "commitUrl": f"{self._repo_url(repo)}/commit/{oid}",
            "hookOutput": "",
        }

    def _repo_info(self, repo: FakeRepo, revision: str) -> tuple[int, dict]:
        branch = self._branch(repo, revision)
        return 200, {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": repo.heads[branch],
            "private": repo.private,
            "siblings": [{"rfilename": path} for path in sorted(repo.branches[branch])],
        }

    def handle(self, method: str, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, dict]:
        def json_body() -> dict:
            return json.loads(body or b"{}")

        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, headers, body))
            if method == "GET" and path == "/api/whoami-v2":
                if "authorization" not in headers:
                    raise _HttpError(401, "Invalid credentials in Authorization header")
                return 200, {
                    "type": "user",
                    "name": DEFAULT_USER,
                    "fullname": "Fake User",
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
                }
            if method == "GET" and path == "/api/agent-harnesses":
                # Fetched by huggingface_hub's user-agent code from constants.ENDPOINT and cached under HF_HOME when
                # it succeeds: a 404 keeps the test's HF_HOME untouched (the client swallows the failure).
                raise _HttpError(404, "fake hub: no agent harness registry")
            if method == "POST" and path == "/api/repos/create":
                return self._create_repo(json_body())
            if method == "POST" and path == "/api/validate-yaml":
                return 200, {"errors": [], "warnings": []}
            match = _REPO_ROUTE.match(path)
            if match:
                repo_type = REPO_TYPES[match["type"]]
                repo = self._find_repo(repo_type, match["repo"])
                action, revision = match["action"], unquote(match["rev"] or "main")
                if method == "POST" and action == "branch":
                    return self._create_branch(repo, revision, json_body())
                if method == "POST" and action == "preupload":
                    return self._preupload(repo, revision, json_body())
                if method == "POST" and action == "commit":
                    return self._commit(repo, revision, body, query)
                if method == "GET" and action in (None, "revision"):
                    return self._repo_info(repo, revision)
            self.unexpected.append(f"{method} {path}")
            raise _HttpError(501, f"fake hub: unexpected request {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers in the client's pool after stop()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        status, headers = 500, {}
        try:
            body = self._read_body()
            status, payload = self.fake_hub.handle(
                self.command, split.path, parse_qs(split.query), {k.lower(): v for k, v in self.headers.items()}, body
            )
        except _HttpError as err:
            status, payload = err.status, {"error": err.message}
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
                headers["X-Error-Message"] = err.message
        except Exception:  # a crash of the fake itself: 400 so the client does not retry, with the traceback
            self.fake_hub.errors.append(traceback.format_exc())
            status, payload = 400, {"error": f"fake hub crashed:\n{traceback.format_exc()}"}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _dispatch

    def log_message(self, format, *args) -> None:  # requests are recorded instead of printed
        pass
