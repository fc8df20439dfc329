"""A fake Hugging Face Hub HTTP server for tests: a test double, not a Hub.

The real, unpatched `huggingface_hub` client (checked against 2.4.0) pushes to and pulls from it when
`HF_ENDPOINT` points at `FakeHub.endpoint`. Only model repos are served, from memory. Endpoints:

    GET  /api/whoami-v2
    GET  /api/agent-harnesses                          (user-agent telemetry registry; answered empty)
    POST /api/validate-yaml                            (README.md metadata check made before a commit)
    POST /api/repos/create
    GET  /api/models/{ns}/{name}[/revision/{rev}]      (`?blobs=true`: size, blobId, lfs per sibling)
    GET  /api/models/{ns}/{name}/tree/{rev}[/{path}]   (`recursive`, `expand`, Link-header pagination)
    POST /api/models/{ns}/{name}/paths-info/{rev}
    POST /api/models/{ns}/{name}/preupload/{rev}       (every file "regular": the client never takes LFS/Xet)
    POST /api/models/{ns}/{name}/commit/{rev}          (NDJSON: header, file, lfsFile, deletedFile, deletedFolder)
    POST /api/models/{ns}/{name}/branch/{branch}
    HEAD/GET /{ns}/{name}/resolve/{rev}/{path}         (`Range` honoured, so interrupted downloads resume)

Like the Hub, a new repo starts with an "initial commit" holding a `.gitattributes`; files it marks
`filter=lfs` are described as LFS files (`lfs.oid` = sha256 in tree listings, `lfs.sha256` in
`model_info(files_metadata=True)`, `X-Linked-Etag` on resolve), the others only by their git blob sha1.
Xet is never advertised, so downloads and uploads stay on plain HTTP. Committing to a missing branch
fails with RevisionNotFound as on the Hub: create it first (`HfApi.create_branch`).

Test hooks: `corrupt`, `fail_after_bytes`, `request_log`, `tree_page_size`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

if TYPE_CHECKING:
    from typing import Self

DEFAULT_TOKENS = {"hf_test_token": "tester"}

DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.ckpt", "*.gz", "*.h5", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.pkl",
                    "*.pt", "*.pth", "*.safetensors", "*.tar", "*.zip", "*tfevents*")
)

_INVERT = bytes(range(255, -1, -1))  # byte table flipping every bit: the corruption `corrupt` applies
_SEGMENT = r"([^/?]+)"
_REPO = rf"/api/models/{_SEGMENT}/{_SEGMENT}"


class HubError(Exception):
    """An error answered the way the Hub does: JSON body plus `X-Error-Code` / `X-Error-Message`."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 **fields: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.fields = headers or {}, fields


@dataclass(frozen=True)
class Blob:
    """Immutable file content with the two hashes the Hub advertises."""

    data: bytes
    sha256: str
    oid: str  # git blob sha1

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls(data, hashlib.sha256(data).hexdigest(), git_oid(data))


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    files: dict[str, Blob]
    title: str
    date: str


@dataclass
class Repo:
    owner: str
    name: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    user: str | None

    def flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true")

    def json(self) -> dict:
        return json.loads(self.body or b"{}")


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # drop the connection after this many body bytes


def git_oid(data: bytes) -> str:
    """Git blob sha1, as `git hash-object` computes it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(blob: Blob) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob.sha256}\nsize {len(blob.data)}\n".encode()


def lfs_patterns(files: dict[str, Blob]) -> list[str]:
    """Patterns marked `filter=lfs` in the commit's `.gitattributes`."""
    attributes = files.get(".gitattributes")
    lines = attributes.data.decode(errors="replace").splitlines() if attributes else []
    return [words[0] for words in map(str.split, lines) if len(words) > 1 and "filter=lfs" in words[1:]]


def is_lfs(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatchcase(path if "/" in pattern else name, pattern) for pattern in patterns)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def json_reply(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range, None without a header."""
    if header is None:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or match.groups() == ("", ""):
        raise HubError(416, f"Invalid range {header!r}")
    first, last = match.groups()
    start, end = (int(first), int(last or size - 1)) if first else (max(size - int(last), 0), size - 1)
    if start >= size or start > end:
        raise HubError(416, f"Range {header!r} not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size - 1)


class FakeHub:
    """In-memory Hub double serving `huggingface_hub` on 127.0.0.1; see the module docstring."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens: dict[str, str] = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self.repos: dict[str, Repo] = {}
        self.request_log: list[tuple[str, str]] = []
        self.tree_page_size: int | None = None  # None: the Hub's 1000 per page (50 with expand)
        self._corrupted: set[tuple[str, str]] = set()
        self._failures: dict[tuple[str, str], tuple[int, int]] = {}
        self._serial = itertools.count()  # makes every commit sha unique, like git's timestamps
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("GET", re.compile(r"/api/whoami-v2"), self._whoami),
            ("GET", re.compile(r"/api/agent-harnesses"), self._agent_harnesses),
            ("POST", re.compile(r"/api/validate-yaml"), self._validate_yaml),
            ("POST", re.compile(r"/api/repos/create"), self._create_repo),
            ("GET", re.compile(_REPO), self._model_info),
            ("GET", re.compile(rf"{_REPO}/revision/{_SEGMENT}"), self._model_info),
            ("GET", re.compile(rf"{_REPO}/tree/{_SEGMENT}(?:/(.*))?"), self._tree),
            ("POST", re.compile(rf"{_REPO}/paths-info/{_SEGMENT}"), self._paths_info),
            ("POST", re.compile(rf"{_REPO}/preupload/{_SEGMENT}"), self._preupload),
            ("POST", re.compile(rf"{_REPO}/commit/{_SEGMENT}"), self._commit),
            ("POST", re.compile(rf"{_REPO}/branch/{_SEGMENT}"), self._create_branch),
            ("HEAD", re.compile(rf"/{_SEGMENT}/{_SEGMENT}/resolve/{_SEGMENT}/(.+)"), self._resolve),
            ("GET", re.compile(rf"/{_SEGMENT}/{_SEGMENT}/resolve/{_SEGMENT}/(.+)"), self._resolve),
        ]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind 127.0.0.1 on a free port and serve from a daemon thread."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------------ test hooks

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve different bytes (same length) for `path` from now on; metadata keeps advertising the original."""
        with self._lock:
            self._corrupted.add((repo_id, path))

    def repair(self, repo_id: str, path: str) -> None:
        """Undo `corrupt`: serve the true bytes again."""
        with self._lock:
            self._corrupted.discard((repo_id, path))

    def fail_after_bytes(self, repo_id: str, path: str, n: int, times: int = 1) -> None:
        """Make the next `times` downloads of `path` drop the connection after `n` body bytes."""
        with self._lock:
            self._failures[(repo_id, path)] = (n, times)

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        """Authenticate and route one request; `HubError`s become Hub-style error replies."""
        parts = urlsplit(url)
        with self._lock:
            self.request_log.append((method, unquote(parts.path)))
            try:
                request = Request(method, parts.path, parse_qs(parts.query), headers, body,
                                  self.user_of(headers.get("authorization")))
                for route_method, pattern, route in self._routes:
                    match = pattern.fullmatch(request.path)
                    if match and route_method == method:
                        return route(request, *(unquote(g) if g else g for g in match.groups()))
                raise HubError(404, f"No route for {method} {parts.path}")
            except HubError as error:
                error_headers = {"X-Error-Message": error.message, **error.headers}
                if error.code:
                    error_headers["X-Error-Code"] = error.code
                return json_reply({"error": error.message, **error.fields}, error.status, error_headers)

    def user_of(self, authorization: str | None) -> str | None:
        """The user a `Bearer` token belongs to; 401 for a token the Hub does not know."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    # ------------------------------------------------------------------ access

    def _readable(self, request: Request, ns: str, name: str) -> Repo:
        repo = self.repos.get(f"{ns}/{name}")
        if repo is None or (repo.private and request.user != repo.owner):
            if request.user is None:
                raise HubError(401, "Invalid username or password.", "RepoNotFound")
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, request: Request, ns: str, name: str) -> Repo:
        if request.user is None:
            raise HubError(401, "You must be authenticated to write to a repository", "RepoNotFound")
        repo = self._readable(request, ns, name)
        if request.user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")
        return repo

    @staticmethod
    def _commit_of(repo: Repo, revision: str) -> Commit:
        sha = repo.branches.get(revision, revision)
        if sha not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    # ------------------------------------------------------------------ account & misc routes

    def _whoami(self, request: Request) -> Reply:
        if request.user is None:
            raise HubError(401, "Invalid username or password.")
        return json_reply({
            "type": "user", "id": hashlib.sha1(request.user.encode()).hexdigest()[:24], "name": request.user,
            "fullname": request.user, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
        })

    def _agent_harnesses(self, request: Request) -> Reply:
        return json_reply({"standardEnvVars": [], "harnesses": {}})

    def _validate_yaml(self, request: Request) -> Reply:
        return json_reply({"errors": [], "warnings": []})

    def _create_repo(self, request: Request) -> Reply:
        if request.user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        payload = request.json()
        if payload.get("type") not in (None, "model"):
            raise HubError(400, "FakeHub only serves model repos")
        owner = payload.get("organization") or request.user
        if owner != request.user:
            raise HubError(403, f"You don't have the rights to create a model under the namespace {owner!r}")
        repo_id = f"{owner}/{payload['name']}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo", url=url)  # exist_ok reads `url`
        repo = Repo(owner, payload["name"], payload.get("visibility") == "private", now())
        self.repos[repo_id] = repo
        self._add_commit(repo, "main", {".gitattributes": Blob.of(DEFAULT_GITATTRIBUTES.encode())}, "initial commit")
        return json_reply({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    # ------------------------------------------------------------------ reading routes

    def _model_info(self, request: Request, ns: str, name: str, revision: str = "main") -> Reply:
        repo = self._readable(request, ns, name)
        commit = self._commit_of(repo, revision)
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "modelId": repo.repo_id,
            "author": repo.owner, "sha": commit.sha, "lastModified": commit.date, "createdAt": repo.created,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": [self._sibling(commit, path, request.flag("blobs")) for path in sorted(commit.files)],
            "usedStorage": sum(len(blob.data) for blob in commit.files.values()),
        }
        if expand := request.query.get("expand"):
            info = {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
        return json_reply(info)

    @staticmethod
    def _sibling(commit: Commit, path: str, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": path}
        entry = describe(commit, path)
        sibling = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
        if "lfs" in entry:
            lfs = entry["lfs"]
            sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
        return sibling

    def _tree(self, request: Request, ns: str, name: str, revision: str, base: str | None) -> Reply:
        repo = self._readable(request, ns, name)
        commit = self._commit_of(repo, revision)
        base = (base or "").strip("/")
        if base and not any(path.startswith(base + "/") for path in commit.files):
            raise HubError(404, f"{base} does not exist on {revision}", "EntryNotFound")
        expand = request.flag("expand")
        paths = tree_paths(commit, base, request.flag("recursive"))
        size = self.tree_page_size or (50 if expand else 1000)
        start = int(request.query.get("cursor", ["0"])[0])
        page = [self._entry(repo, commit, path, expand) for path in paths[start:start + size]]
        headers = {}
        if start + size < len(paths):
            query = {key: values[-1] for key, values in request.query.items()} | {"cursor": start + size}
            headers["Link"] = f'<{self.endpoint}{request.path}?{urlencode(query)}>; rel="next"'
        return json_reply(page, headers=headers)

    def _paths_info(self, request: Request, ns: str, name: str, revision: str) -> Reply:
        repo = self._readable(request, ns, name)
        commit = self._commit_of(repo, revision)
        form = parse_qs(request.body.decode())
        directories = set(tree_paths(commit, "", recursive=True)) - commit.files.keys()
        wanted = [path.strip("/") for path in form.get("paths", [])]
        expand = form.get("expand", ["false"])[-1].lower() == "true"
        found = [path for path in wanted if path in commit.files or path in directories]
        return json_reply([self._entry(repo, commit, path, expand) for path in found])

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        entry = describe(commit, path)
        if expand:
            last = last_commit_touching(repo, commit, path)
            entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return entry

    def _resolve(self, request: Request, ns: str, name: str, revision: str, path: str) -> Reply:
        repo = self._readable(request, ns, name)
        commit = self._commit_of(repo, revision)
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers)
        headers |= {"ETag": f'"{blob.oid}"', "Content-Type": "application/octet-stream"}
        if is_lfs(path, lfs_patterns(commit.files)):
            headers |= {"ETag": f'"{blob.sha256}"', "X-Linked-Etag": f'"{blob.sha256}"',
                        "X-Linked-Size": str(len(blob.data))}
        data = blob.data.translate(_INVERT) if (repo.repo_id, path) in self._corrupted else blob.data
        span = parse_range(request.headers.get("range"), len(data))
        if span is None:
            return Reply(200, data, headers, self._take_failure(request, repo.repo_id, path))
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return Reply(206, data[start:end + 1], headers, self._take_failure(request, repo.repo_id, path))

    def _take_failure(self, request: Request, repo_id: str, path: str) -> int | None:
        """Bytes to send before dropping the connection, if a `fail_after_bytes` hook is armed."""
        if request.method != "GET" or (repo_id, path) not in self._failures:
            return None
        n, times = self._failures.pop((repo_id, path))
        if times > 1:
            self._failures[(repo_id, path)] = (n, times - 1)
        return n

    # ------------------------------------------------------------------ writing routes

    def _preupload(self, request: Request, ns: str, name: str, revision: str) -> Reply:
        repo = self._writable(request, ns, name)
        commit = self._commit_of(repo, revision)
        files = [
            {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": commit.files[item["path"]].oid if item["path"] in commit.files else None}
            for item in request.json().get("files", [])
        ]
        return json_reply({"files": files, "commitOid": commit.sha})

    def _commit(self, request: Request, ns: str, name: str, revision: str) -> Reply:
        repo = self._writable(request, ns, name)
        if request.flag("create_pr"):
            raise HubError(400, "FakeHub does not support pull requests")
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first NDJSON line must be the commit header")
        header = lines[0]["value"]
        parent = repo.commits[repo.branches[revision]]
        if header.get("parentCommit") not in (None, parent.sha):
            raise HubError(412, f"A commit has happened since {header['parentCommit']} on {revision}")
        files = dict(parent.files)
        for line in lines[1:]:
            self._apply(files, line["key"], line["value"])
        sha = self._add_commit(repo, revision, files, header.get("summary") or "Update files")
        url = f"{self.endpoint}/{repo.repo_id}/commit/{sha}"
        return json_reply({"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": "",
                           "pullRequestUrl": None})

    def _apply(self, files: dict[str, Blob], key: str, value: dict) -> None:
        """Apply one commit operation to the (copied) file map of the new commit."""
        path = value["path"].strip("/")
        if not path or path.startswith("../") or "/../" in f"/{path}/":
            raise HubError(400, f"Invalid path {value['path']!r}")
        if key == "file":
            files[path] = Blob.of(base64.b64decode(value["content"]))
        elif key == "lfsFile":  # what `CommitOperationCopy` sends for a file described as LFS
            files[path] = self._blob_by_sha256(value["oid"])
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
        elif key == "deletedFolder":
            for doomed in [p for p in files if p.startswith(path + "/")]:
                del files[doomed]
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")

    def _blob_by_sha256(self, sha256: str) -> Blob:
        for repo in self.repos.values():
            for commit in repo.commits.values():
                for blob in commit.files.values():
                    if blob.sha256 == sha256:
                        return blob
        raise HubError(422, f"Unknown LFS object {sha256}")

    def _add_commit(self, repo: Repo, branch: str, files: dict[str, Blob], title: str) -> str:
        parent = repo.branches.get(branch)
        seed = "\n".join([parent or "", title, str(next(self._serial))]
                         + [f"{path} {blob.sha256}" for path, blob in sorted(files.items())])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = Commit(sha, parent, files, title, now())
        repo.branches[branch] = sha
        return sha

    def _create_branch(self, request: Request, ns: str, name: str, branch: str) -> Reply:
        repo = self._writable(request, ns, name)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start = self._commit_of(repo, request.json().get("startingPoint") or "main")
        repo.branches[branch] = start.sha
        return json_reply({})


def describe(commit: Commit, path: str) -> dict:
    """Tree-listing entry of a file or directory, as `/tree` and `/paths-info` return it."""
    blob = commit.files.get(path)
    if blob is None:
        children = sorted(f"{p} {b.oid}" for p, b in commit.files.items() if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1("\n".join(children).encode()).hexdigest(), "path": path}
    if not is_lfs(path, lfs_patterns(commit.files)):
        return {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
    pointer = lfs_pointer(blob)
    return {"type": "file", "oid": git_oid(pointer), "size": len(blob.data), "path": path,
            "lfs": {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(pointer)}}


def tree_paths(commit: Commit, base: str, recursive: bool) -> list[str]:
    """Directories then files under `base`: direct children only unless `recursive`."""
    prefix = f"{base}/" if base else ""
    directories: set[str] = set()
    files: list[str] = []
    for path in sorted(p for p in commit.files if p.startswith(prefix)):
        parts = path[len(prefix):].split("/")
        depth = len(parts) if recursive else 1
        directories.update(prefix + "/".join(parts[:i]) for i in range(1, min(depth + 1, len(parts))))
        if recursive or len(parts) == 1:
            files.append(path)
    return sorted(directories) + files


def last_commit_touching(repo: Repo, commit: Commit, path: str) -> Commit:
    """Most recent ancestor of `commit` (itself included) that changed `path` or anything under it."""
    def snapshot(c: Commit) -> dict[str, str]:
        return {p: b.sha256 for p, b in c.files.items() if p == path or p.startswith(path + "/")}

    while commit.parent is not None:
        parent = repo.commits[commit.parent]
        if snapshot(parent) != snapshot(commit):
            return commit
        commit = parent
    return commit


class _Handler(BaseHTTPRequestHandler):
    """Passes each HTTP/1.1 request to `FakeHub.handle` and writes its `Reply` back."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {key.lower(): value for key, value in self.headers.items()}
        self._write(self.server.hub.handle(self.command, self.path, headers, body))  # type: ignore[attr-defined]

    def _write(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        self.wfile.write(reply.body[:reply.cut_after] if reply.cut_after is not None else reply.body)
        if reply.cut_after is not None:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr log."""
