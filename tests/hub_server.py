"""A small Hub-compatible HTTP server for tests (standard library only, binds 127.0.0.1 only).

It implements what huggingface_hub and transformers use to create a model or dataset repo,
upload to it (regular and LFS files, one commit at a time) and download from it (dataset repos:
the same routes under /api/datasets/ and /datasets/):

    GET  /api/whoami-v2
    POST /api/repos/create                        409 with the url when the repo exists
    DELETE /api/repos/delete
    GET  /api/models/{ns}/{name}[/revision/{rev}] file list (`siblings`) and `sha`
    POST /api/models/{ns}/{name}/preupload/{rev}  `uploadMode` regular or lfs, and the current `oid`
    POST /api/models/{ns}/{name}/commit/{rev}     ndjson: header, file, lfsFile, deletedFile
    POST /api/models/{ns}/{name}/branch/{branch}
    GET  /api/models/{ns}/{name}/tree/{rev}[/{path}]
    POST /api/models/{ns}/{name}/paths-info/{rev}
    POST /api/validate-yaml
    POST /{ns}/{name}.git/info/lfs/objects/batch  with upload and verify actions
    PUT  /lfs/upload/{oid}, POST /lfs/verify/{oid}
    GET/HEAD /{ns}/{name}/resolve/{rev}/{path}    X-Repo-Commit, ETag, X-Linked-Etag/-Size for LFS

Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) so that the client
raises its own exceptions. Writes need `Authorization: Bearer <token>`; a commit is applied
whole or not at all. `fail_commits = True` makes commits fail (to test a failed upload).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".png", ".jpg", ".h5", ".gz", ".parquet")
EMPTY_ROOT = "0" * 40


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Entry:
    size: int
    content: bytes | None = None  # regular file
    lfs_sha256: str | None = None  # LFS file

    @property
    def oid(self) -> str:
        """What the client compares to skip unchanged files: sha256 for LFS, git sha1 otherwise."""
        return self.lfs_sha256 if self.lfs_sha256 else git_blob_sha1(self.content)

    @property
    def blob_id(self) -> str:
        if self.lfs_sha256:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.lfs_sha256}\nsize {self.size}\n"
            return git_blob_sha1(pointer.encode())
        return git_blob_sha1(self.content)


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, Entry]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class HubState:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.fail_commits = False
        self.lock = threading.Lock()
        self._counter = 0

    def new_commit(self, repo: Repo, files: dict[str, Entry], message: str) -> str:
        self._counter += 1
        digest = hashlib.sha1(f"{repo.repo_id}:{self._counter}:{message}".encode())
        for path in sorted(files):
            digest.update(f"{path}:{files[path].oid}".encode())
        sha = digest.hexdigest()
        repo.commits[sha] = files
        repo.messages[sha] = message
        return sha

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, private=private)
        gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        files = {".gitattributes": Entry(size=len(gitattributes), content=gitattributes)}
        repo.branches["main"] = self.new_commit(repo, files, "initial commit")
        self.repos[repo_id] = repo
        return repo


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class HubRequestHandler(BaseHTTPRequestHandler):
    server_version = "LoopbackHub/1.0"
    protocol_version = "HTTP/1.1"

    @property
    def hub(self) -> HubState:
        return self.server.hub

    def log_message(self, format, *args):  # keep test output quiet
        return

    # ------------------------------------------------------------------ plumbing
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        raw_parts = [part for part in split.path.split("/") if part]
        parts = [unquote(part) for part in raw_parts]
        self.query = parse_qs(split.query)
        body = self._read_body()
        with self.hub.lock:
            self.hub.requests.append(f"{method} {split.path}")
        try:
            self._route(method, parts, body)
        except HubError as error:
            payload = json.dumps(error.body or {"error": error.message}).encode()
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._send(error.status, payload, headers=headers, content_type="application/json")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), content_type="application/json")

    def _require_token(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and self.headers.get("Authorization") != f"Bearer {self.hub.token}"):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> tuple[str, dict[str, Entry]]:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, repo.commits[sha]

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, parts: list[str], body: bytes) -> None:
        if parts[:2] == ["api", "whoami-v2"]:
            self._require_token()
            return self._json({"type": "user", "name": "tester", "orgs": [], "auth": {"type": "access_token"}})
        if parts[:2] == ["api", "validate-yaml"]:
            return self._json({"errors": [], "warnings": []})
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if parts[:3] == ["api", "repos", "delete"] and method == "DELETE":
            return self._delete_repo(json.loads(body or b"{}"))
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._model_api(method, f"{parts[2]}/{parts[3]}", parts[4:], body)
        if parts[:2] == ["api", "datasets"] and len(parts) >= 4:
            return self._model_api(method, f"datasets/{parts[2]}/{parts[3]}", parts[4:], body)
        if parts[:1] == ["datasets"] and len(parts) >= 3:  # dataset repos: ids kept as "datasets/ns/name"
            return self._route(method, [f"datasets/{parts[1]}", *parts[2:]], body)
        if parts[:2] == ["lfs", "upload"] and method == "PUT":
            return self._lfs_upload(parts[2], body)
        if parts[:2] == ["lfs", "verify"] and method == "POST":
            return self._lfs_verify(json.loads(body))
        if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(f"{parts[0]}/{parts[1][:-4]}", json.loads(body))
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HubError(404, f"no route for {method} /{'/'.join(parts)}")

    def _model_api(self, method: str, repo_id: str, rest: list[str], body: bytes) -> None:
        if not rest or rest[0] == "revision":
            repo = self._repo(repo_id)
            return self._repo_info(repo, rest[1] if len(rest) > 1 else "main")
        action = rest[0]
        if action == "preupload" and method == "POST":
            self._require_token()
            return self._preupload(self._repo(repo_id), rest[1], json.loads(body))
        if action == "commit" and method == "POST":
            self._require_token()
            return self._apply_commit(self._repo(repo_id), rest[1], body)
        if action == "branch" and method == "POST":
            self._require_token()
            return self._create_branch(self._repo(repo_id), rest[1], json.loads(body or b"{}"))
        if action == "tree" and method == "GET":
            return self._tree(self._repo(repo_id), rest[1], "/".join(rest[2:]))
        if action == "paths-info" and method == "POST":
            return self._paths_info(self._repo(repo_id), rest[1], body)
        raise HubError(404, f"no route for {method} {action}")

    # ------------------------------------------------------------------ repos
    def _create_repo(self, payload: dict) -> None:
        self._require_token()
        name, organization = payload["name"], payload.get("organization")
        repo_id = f"{organization}/{name}" if organization else name
        if "/" not in repo_id:
            repo_id = f"tester/{repo_id}"
        if payload.get("type") == "dataset":
            repo_id = f"datasets/{repo_id}"
        url = f"{self.server.url}/{repo_id}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                raise HubError(409, "You already created this model repo", body={"error": "exists", "url": url})
            private = payload.get("private") or payload.get("visibility") == "private"
            self.hub.create_repo(repo_id, bool(private))
        self._json({"url": url, "name": repo_id})

    def _delete_repo(self, payload: dict) -> None:
        self._require_token()
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        with self.hub.lock:
            if self.hub.repos.pop(repo_id, None) is None:
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        self._json({})

    def _repo_info(self, repo: Repo, revision: str) -> None:
        sha, files = self._commit(repo, revision)
        siblings = [
            {"rfilename": path, "size": entry.size, "blobId": entry.blob_id} for path, entry in sorted(files.items())
        ]
        self._json(
            {
                "_id": repo.repo_id,
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
            }
        )

    def _create_branch(self, repo: Repo, branch: str, payload: dict) -> None:
        with self.hub.lock:
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            sha, _ = self._commit(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = sha
        self._json({})

    # ------------------------------------------------------------------ listing
    def _file_info(self, path: str, entry: Entry) -> dict:
        info = {"type": "file", "path": path, "size": entry.size, "oid": entry.blob_id}
        if entry.lfs_sha256:
            info["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": 130}
        return info

    def _tree(self, repo: Repo, revision: str, prefix: str) -> None:
        _, files = self._commit(repo, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = prefix.strip("/")
        entries, folders = [], set()
        for path, entry in sorted(files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            relative = path[len(prefix) + 1 :] if prefix else path
            if "/" in relative and not recursive:
                folders.add((prefix + "/" if prefix else "") + relative.split("/")[0])
                continue
            entries.append(self._file_info(path, entry))
        entries += [{"type": "directory", "path": folder, "oid": EMPTY_ROOT, "size": 0} for folder in sorted(folders)]
        self._json(entries)

    def _paths_info(self, repo: Repo, revision: str, body: bytes) -> None:
        _, files = self._commit(repo, revision)
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        self._json([self._file_info(path, files[path]) for path in paths if path in files])

    # ------------------------------------------------------------------ uploads
    def _preupload(self, repo: Repo, revision: str, payload: dict) -> None:
        _, files = self._commit(repo, revision)
        answers = []
        for item in payload.get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            is_lfs = item["path"].endswith(LFS_EXTENSIONS) or b"\0" in sample or item.get("size", 0) > 10_000_000
            existing = files.get(item["path"])
            answers.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if is_lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.oid if existing is not None else None,
                }
            )
        self._json({"files": answers, "commitOid": repo.resolve(revision)})

    def _lfs_batch(self, repo_id: str, payload: dict) -> None:
        self._require_token()
        self._repo(repo_id)
        objects = []
        for item in payload.get("objects", []):
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.hub.lfs_objects:  # already stored objects need no upload
                answer["actions"] = {
                    "upload": {"href": f"{self.server.url}/lfs/upload/{item['oid']}"},
                    "verify": {"href": f"{self.server.url}/lfs/verify/{item['oid']}"},
                }
            objects.append(answer)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_upload(self, oid: str, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not hash to {oid}")
        with self.hub.lock:
            self.hub.lfs_objects[oid] = body
        self._send(200)

    def _lfs_verify(self, payload: dict) -> None:
        stored = self.hub.lfs_objects.get(payload["oid"])
        if stored is None or len(stored) != payload["size"]:
            raise HubError(404, f"LFS object {payload['oid']} was not uploaded")
        self._json({})

    def _apply_commit(self, repo: Repo, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        with self.hub.lock:
            if self.hub.fail_commits:
                raise HubError(422, "commit rejected by the test server (fail_commits)")
            head, files = self._commit(repo, revision)
            files = dict(files)
            summary = ""
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    summary = value.get("summary", "")
                    parent = value.get("parentCommit")
                    if parent and parent != head:
                        raise HubError(412, f"parent commit {parent} is not the head {head}")
                elif key == "file":
                    content = base64.b64decode(value["content"])
                    files[value["path"]] = Entry(size=len(content), content=content)
                elif key == "lfsFile":
                    if value["oid"] not in self.hub.lfs_objects:
                        raise HubError(422, f"LFS object {value['oid']} of {value['path']} was not uploaded")
                    files[value["path"]] = Entry(size=value["size"], lfs_sha256=value["oid"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {path: entry for path, entry in files.items() if not path.startswith(folder)}
                else:
                    raise HubError(400, f"unsupported commit operation {key}")
            sha = self.hub.new_commit(repo, files, summary)
            branch = revision if revision in repo.branches else None
            if branch is None:
                raise HubError(400, f"can only commit to a branch, not {revision}")
            repo.branches[branch] = sha
        self._json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self.server.url}/{repo.repo_id}/commit/{sha}",
                "pullRequestUrl": None,
                "hookOutput": "",
            }
        )

    # ------------------------------------------------------------------ downloads
    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id)
        sha, files = self._commit(repo, revision)
        entry = files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = self.hub.lfs_objects[entry.lfs_sha256] if entry.lfs_sha256 else entry.content
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry.blob_id}"', "Accept-Ranges": "none"}
        if entry.lfs_sha256:
            headers.update({"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": str(entry.size)})
        self._send(200, content, headers=headers, content_type="application/octet-stream")


class LoopbackHub(ThreadingHTTPServer):
    """`with LoopbackHub(token) as hub:` serves on 127.0.0.1 on a free port in a daemon thread."""

    daemon_threads = True

    def __init__(self, token: str = "hf_loopback_test_token"):
        super().__init__(("127.0.0.1", 0), HubRequestHandler)
        self.hub = HubState(token)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()
        self.server_close()

    def publish(self, repo_id: str, files: dict[str, bytes]) -> None:
        """Creates `repo_id` holding `files` (regular files), as if someone else had pushed them."""
        with self.hub.lock:
            repo = self.hub.create_repo(repo_id, private=False)
            entries = dict(repo.commits[repo.branches["main"]])
            entries.update({path: Entry(size=len(content), content=content) for path, content in files.items()})
            repo.branches["main"] = self.hub.new_commit(repo, entries, "published by someone else")

    def files_of(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The content of every file of a revision (for assertions)."""
        repo = self.hub.repos[repo_id]
        files = repo.commits[repo.resolve(revision)]
        return {
            path: self.hub.lfs_objects[entry.lfs_sha256] if entry.lfs_sha256 else entry.content
            for path, entry in files.items()
        }

    def commit_count(self, repo_id: str) -> int:
        return len(self.hub.repos[repo_id].commits)
