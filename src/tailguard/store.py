"""Artifact stores with one layout for a local folder and S3 (the only module that imports boto3)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

# Local bookkeeping files (atomic-write temporaries, pointer locks) start with this and are never listed.
_INTERNAL_PREFIX = ".tailguard-"
_CHUNK = 1 << 20


class StoreError(Exception):
    """A store operation failed (unreachable, permission, bad key); `transient` if a retry may help."""

    def __init__(self, message: str, *, key: str | None = None, bucket: str | None = None, transient=False):
        super().__init__(message)
        self.message = message
        self.key = key
        self.bucket = bucket
        self.transient = transient

    def __str__(self) -> str:
        # KeyNotFound also derives from KeyError, whose __str__ would print the repr of the message.
        return self.message


class KeyNotFound(StoreError, KeyError):
    """The key does not exist in the store."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class ConditionalWritesIgnored(StoreError):
    """The endpoint accepts PutObject but does not enforce If-Match / If-None-Match on it.

    Two racing promotions would then both "win" the production.json flip (one vanishes from the rollback
    history), so the registry refuses to promote or roll back on such a store.
    """


def _check_key(key: str) -> str:
    """Refuse keys that could escape the store root or collide with bookkeeping files."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid store key {key!r}: use non-empty '/'-separated parts without '.' or '..'")
    if any(p.startswith(_INTERNAL_PREFIX) for p in parts):
        raise StoreError(f"invalid store key {key!r}: names starting {_INTERNAL_PREFIX!r} are reserved")
    return key


def _join(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}" if prefix.strip("/") else name


# What a browser needs to show an object rather than download it (S3 otherwise serves binary/octet-stream:
# a presigned summary.html was downloaded, not shown). Text types carry their charset: tailguard writes UTF-8.
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".tsv": "text/tab-separated-values; charset=utf-8",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".pdf": "application/pdf",
    ".parquet": "application/vnd.apache.parquet",
    ".gz": "application/gzip",
    ".zip": "application/zip",
}


def content_type(key: str) -> str:
    """The Content-Type of a store key, from its last suffix (case-insensitive).

    e.g. `reports/summary.html` -> `text/html; charset=utf-8`, `metrics.json` -> `application/json`,
    `model/model.safetensors` -> `application/octet-stream` (anything not in the table).
    """
    return _CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(local_dir: Path) -> Iterator[tuple[Path, str]]:
    """Yield (path, relative posix name) for every file below local_dir, sorted."""
    for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
        yield path, path.relative_to(local_dir).as_posix()


class ArtifactStore(ABC):
    """Key/value object store with conditional writes; keys are '/'-separated and relative to `uri`."""

    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write (or overwrite) an object."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read an object; KeyNotFound when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object exists at key."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with prefix."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file."""

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None:
        """Download an object to a local file (parents created); KeyNotFound when absent."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """(data, etag) of an object, or None when absent; the etag feeds put_conditional."""

    @abstractmethod
    def put_conditional(self, key: str, data: bytes, expected_etag: str | None) -> str:
        """Write only if absent (expected_etag None) or unchanged since read; returns the new etag."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; absent keys are fine."""

    def put_file_once(self, key: str, path: Path) -> None:
        """Upload a local file only if no object exists at key (write-once); PreconditionFailed otherwise.

        The base version checks then writes (not atomic); LocalStore and S3Store make the check part of
        the write (hard link / If-None-Match: *), so two writers never both land.
        """
        if self.exists(key):
            raise PreconditionFailed(f"{key!r} already exists in {self.uri} (write-once)", key=key)
        self.put_file(key, path)

    def require_conditional_writes(self) -> None:
        """Raise ConditionalWritesIgnored unless put_conditional really refuses a write that breaks its
        condition. The base and LocalStore enforce it themselves (flock + atomic rename): nothing to probe."""
        return None

    def upload_dir(self, local_dir: Path, prefix: str) -> list[str]:
        """Upload every file below local_dir under prefix; returns the keys written."""
        keys = []
        for path, rel in _files_under(Path(local_dir)):
            key = _join(prefix, rel)
            self.put_file(key, path)
            keys.append(key)
        return keys

    def download_dir(self, prefix: str, local_dir: Path) -> list[Path]:
        """Download every object under prefix/ into local_dir, keeping relative paths."""
        base = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        paths = []
        for key in self.list_keys(base):
            target = Path(local_dir) / key[len(base) :]
            self.get_file(key, target)
            paths.append(target)
        return paths


class LocalStore(ArtifactStore):
    """A folder with the S3 layout; writes are atomic (temp file + os.replace)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{_INTERNAL_PREFIX}tmp-{uuid.uuid4().hex}-{path.name}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_atomic(self._path(key), data)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(f"no object {key!r} in store {self.uri}", key=key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(_INTERNAL_PREFIX)]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(_INTERNAL_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def _put_file(self, key: str, path: Path, publish) -> None:
        """Copy path to a temp name beside the key, then publish(tmp, target) makes it appear whole."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{_INTERNAL_PREFIX}tmp-{uuid.uuid4().hex}-{target.name}")
        try:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
            publish(tmp, target)
        except FileExistsError:
            raise PreconditionFailed(f"{key!r} already exists in {self.uri} (write-once)", key=key) from None
        except FileNotFoundError as exc:
            raise StoreError(f"cannot upload {path} to {key!r}: {exc}", key=key) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        self._put_file(key, path, os.replace)

    def put_file_once(self, key: str, path: Path) -> None:
        # link() fails when the name exists, so the complete file appears once or not at all.
        self._put_file(key, path, os.link)

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise KeyNotFound(f"no object {key!r} in store {self.uri}", key=key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as src, open(path, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)

    @staticmethod
    def _etag(data: bytes) -> str:
        # A content hash: equal content means equal etag, like S3's MD5 etag of a single-part upload.
        return '"' + hashlib.sha256(data).hexdigest() + '"'

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get_bytes(key)
        except KeyNotFound:
            return None
        return data, self._etag(data)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        # flock is released by the kernel if the process dies, so a crash never leaves a stale lock.
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(f"{_INTERNAL_PREFIX}lock-{path.name}")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def put_conditional(self, key: str, data: bytes, expected_etag: str | None) -> str:
        path = self._path(key)
        with self._locked(path):
            found = self.read_versioned(key)
            if expected_etag is None and found is not None:
                raise PreconditionFailed(
                    f"{key!r} already exists in {self.uri} (write-if-absent lost)", key=key
                )
            if expected_etag is not None and (found is None or found[1] != expected_etag):
                raise PreconditionFailed(
                    f"{key!r} in {self.uri} changed since it was read (expected etag {expected_etag})",
                    key=key,
                )
            self._write_atomic(path, data)
        return self._etag(data)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store(ArtifactStore):
    """s3://bucket/prefix via boto3; endpoint, profile and credentials come from the usual AWS_* variables."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        max_attempts: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if max_attempts is None:
            max_attempts = int(os.environ.get("TAILGUARD_S3_MAX_ATTEMPTS", "5"))
        # botocore's "standard" mode retries only transient failures (throttling, 5xx, connection
        # errors) with jittered backoff; 4xx such as 403/404/412 surface at once.
        config = Config(
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        # A Session per store reads AWS_PROFILE, AWS_ENDPOINT_URL(_S3), AWS_REGION/AWS_DEFAULT_REGION and
        # the credential chain itself; a private session also keeps stores safe to use from threads.
        session = boto3.session.Session()
        region = session.region_name or "us-east-1"
        self.client = session.client("s3", region_name=region, config=config)
        self.endpoint = self.client.meta.endpoint_url
        self._conditional_problem: str | None = None  # set by the first probe: "" when honoured

    def _key(self, key: str) -> str:
        return _join(self.prefix, _check_key(key))

    def _error(self, exc: Exception, op: str, key: str | None) -> StoreError:
        """Translate a botocore/boto3 failure into a StoreError that names the bucket and key."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        # Not self._key(): a list prefix ends in '/', which _check_key refuses, and that turned every failed
        # list into "invalid store key" (never retried). A message must never fail to build.
        where = f"s3://{self.bucket}/{_join(self.prefix, key) if key else self.prefix}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = f"{op} {where} failed: {code} {error.get('Message', '')}".strip()
            if code in ("NoSuchKey", "404", "NotFound"):
                return KeyNotFound(f"no object at {where}", key=key, bucket=self.bucket)
            # S3 answers 409 ConditionalRequestConflict when two conditional writes race on one key.
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or status in (409, 412):
                return PreconditionFailed(
                    f"{op} {where}: the object changed since it was read (conditional write lost)",
                    key=key,
                    bucket=self.bucket,
                )
            if code == "NoSuchBucket":
                message = (
                    f"{op} {where} failed: bucket {self.bucket!r} does not exist (endpoint {self.endpoint})"
                )
            return StoreError(message, key=key, bucket=self.bucket, transient=bool(status and status >= 500))
        if isinstance(exc, EndpointConnectionError):
            return StoreError(
                f"{op} {where} failed: S3 endpoint {self.endpoint} unreachable after retries ({exc})",
                key=key,
                bucket=self.bucket,
                transient=True,
            )
        if isinstance(exc, NoCredentialsError):
            return StoreError(
                f"{op} {where} failed: no AWS credentials (set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY)",
                key=key,
                bucket=self.bucket,
            )
        if isinstance(exc, BotoCoreError):
            return StoreError(f"{op} {where} failed: {exc}", key=key, bucket=self.bucket, transient=True)
        return StoreError(f"{op} {where} failed: {exc}", key=key, bucket=self.bucket)

    @contextlib.contextmanager
    def _call(self, op: str, key: str | None = None) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, op, key) from exc
        except Boto3Error as exc:
            # upload_file wraps ClientError in S3UploadFailedError; unwrap to keep the code.
            cause = exc.__cause__ or exc.__context__
            raise self._error(cause if isinstance(cause, ClientError) else exc, op, key) from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (dev servers such as moto_server start empty)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            with self._call("create bucket"):
                self.client.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._call("put", key):
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type(key)
            )

    def get_bytes(self, key: str) -> bytes:
        with self._call("get", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            with self._call("head", key):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except KeyNotFound:
            return False
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        root = self.prefix + "/" if self.prefix else ""
        keys = []
        with self._call("list", prefix or None):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
                keys.extend(obj["Key"][len(root) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def put_file(self, key: str, path: Path) -> None:
        if not Path(path).is_file():
            raise StoreError(f"cannot upload {path} to {key!r}: not a file", key=key, bucket=self.bucket)
        with self._call("upload", key):
            # upload_file switches to multipart above 8 MiB, which large safetensors files need.
            self.client.upload_file(
                str(path), self.bucket, self._key(key), ExtraArgs={"ContentType": content_type(key)}
            )

    # One PutObject carries at most 5 GiB (S3 limit); boto3's managed upload cannot send If-None-Match.
    _SINGLE_PUT_MAX = 5 * 2**30

    def put_file_once(self, key: str, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"cannot upload {path} to {key!r}: not a file", key=key, bucket=self.bucket)
        if path.stat().st_size > self._SINGLE_PUT_MAX:
            raise StoreError(
                f"cannot write {key!r} once: {path} is over 5 GiB, the most one conditional PutObject takes",
                key=key,
                bucket=self.bucket,
            )
        with self._call("write-once put", key), open(path, "rb") as body:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=body,
                IfNoneMatch="*",
                ContentType=content_type(key),
            )

    def get_file(self, key: str, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._call("download", key):
            self.client.download_file(self.bucket, self._key(key), str(path))

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            with self._call("get", key):
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                return response["Body"].read(), response["ETag"]
        except KeyNotFound:
            return None

    def put_conditional(self, key: str, data: bytes, expected_etag: str | None) -> str:
        condition = {"IfNoneMatch": "*"} if expected_etag is None else {"IfMatch": expected_etag}
        try:
            with self._call("conditional put", key):
                response = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    ContentType=content_type(key),
                    **condition,
                )
        except KeyNotFound as exc:
            # S3 answers If-Match on a missing key with 404: for the caller that is a lost race too.
            raise PreconditionFailed(
                f"conditional put s3://{self.bucket}/{self._key(key)}: the object was deleted since read",
                key=key,
                bucket=self.bucket,
            ) from exc
        return response["ETag"]

    def delete(self, key: str) -> None:
        with self._call("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def require_conditional_writes(self) -> None:
        """Probe once per store that the endpoint enforces If-None-Match and If-Match on PutObject.

        A scratch key (`_tailguard-probe/<uuid>`, deleted afterwards) is written with If-None-Match: *
        twice, then with If-Match on an etag it never had; both later writes must be refused (412/409).
        Some S3-compatible servers drop these headers silently. Raises ConditionalWritesIgnored naming
        the endpoint and the header; a transient StoreError (unreachable) is raised without caching.
        """
        if self._conditional_problem is None:
            self._conditional_problem = self._probe_conditional_writes()
        if self._conditional_problem:
            raise ConditionalWritesIgnored(self._conditional_problem, bucket=self.bucket)

    def _probe_conditional_writes(self) -> str:
        """'' when both conditions are enforced, else why not (what the refusal message says)."""
        key = _join(self.prefix, f"_tailguard-probe/{uuid.uuid4().hex}")
        where = f"s3://{self.bucket}/{key} at endpoint {self.endpoint}"
        advice = (
            "; production.json cannot be flipped safely there (two racing promotions would both succeed). "
            "Promotion and rollback are refused: use an S3 store that enforces conditional writes."
        )
        attempts = [("If-None-Match", {"IfNoneMatch": "*"}), ("If-None-Match", {"IfNoneMatch": "*"}),
                    ("If-Match", {"IfMatch": '"' + "0" * 32 + '"'})]  # fmt: skip
        written = False
        try:
            for i, (header, condition) in enumerate(attempts):
                try:
                    with self._call("conditional-write probe", None):
                        self.client.put_object(Bucket=self.bucket, Key=key, Body=b"%d" % i, **condition)
                    written = True
                except PreconditionFailed:
                    if i == 0:  # a fresh uuid key cannot exist: the server refuses even the first write
                        return f"{where} refused a first write-if-absent to a new key" + advice
                    continue
                except StoreError as exc:
                    if exc.transient:
                        raise
                    # e.g. 501 NotImplemented or 400 for an unknown header: not supported at all.
                    return f"{where} does not support {header} on PutObject ({exc})" + advice
                if i > 0:
                    return (
                        f"{where} ignores {header} on PutObject: a write that had to be refused "
                        f"({header}: {next(iter(condition.values()))}) succeeded" + advice
                    )
        finally:
            if written:  # cleanup only; the verdict stands either way
                with contextlib.suppress(Exception):
                    self.client.delete_object(Bucket=self.bucket, Key=key)
        return ""


def key_uri(store: ArtifactStore, key: str) -> str:
    """The URI of `key` in `store` that another process or node can read: s3://bucket/prefix/key, or the
    local path (a local store is then assumed shared, e.g. NFS, between the nodes)."""
    return f"{store.uri.rstrip('/')}/{key.lstrip('/')}"


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True for an s3:// URI (scheme case-insensitive), the one remote scheme; paths and file:// are local.

    Every module asks this instead of parsing the scheme itself, so a new scheme is added here once.
    """
    return urlparse(str(uri)).scheme == "s3"


def split_uri(uri: str | os.PathLike[str]) -> tuple[str, str]:
    """(bucket, key) of an s3://bucket/key URI; the key as written (may be '' or end in '/').

    The key is everything after the bucket's '/', '?' and '#' included (both are legal in S3 keys).
    Raises StoreError for a URI that is not s3:// or has no bucket.
    """
    uri = str(uri)
    if not is_remote(uri):
        raise StoreError(f"{uri!r} is not an s3:// URI: use s3://bucket/prefix")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StoreError(f"store URI {uri!r} has no bucket: use s3://bucket/prefix")
    return bucket, key


def open_store(uri: str = "") -> ArtifactStore:
    """'' -> the settings' store, a path or file:// URI -> LocalStore, s3://bucket/prefix -> S3Store."""
    if not uri:
        from tailguard.settings import get_settings

        uri = get_settings().store_uri
    if is_remote(uri):
        bucket, prefix = split_uri(uri)
        return _s3_store(bucket, prefix.strip("/"), _aws_environment())
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter would be a Windows drive
        raise StoreError(f"unsupported store URI {uri!r}: use a folder path or s3://bucket/prefix")
    return LocalStore(uri)


def _aws_environment() -> tuple[tuple[str, str], ...]:
    """The variables an S3Store reads when it is created (its cache key: a changed variable, a new client)."""
    return tuple(
        sorted(
            (k, v) for k, v in os.environ.items() if k.startswith("AWS_") or k == "TAILGUARD_S3_MAX_ATTEMPTS"
        )
    )


@functools.lru_cache(maxsize=16)
def _s3_store(bucket: str, prefix: str, environment: tuple[tuple[str, str], ...]) -> S3Store:
    """One S3Store per (bucket, prefix, AWS environment): creating a boto3 client costs ~0.1 s, and a retrain
    opens its store ~20 times. boto3 clients are thread-safe once created."""
    return S3Store(bucket, prefix)


def tree_digest(store: ArtifactStore, prefix: str = "", exclude_prefix: str | None = None) -> str:
    """sha256 over (key, content sha256) of every object under prefix, skipping keys under exclude_prefix."""
    digest = hashlib.sha256()
    for key in store.list_keys(prefix):
        if exclude_prefix and key.startswith(exclude_prefix):
            continue
        digest.update(f"{key}\t{hashlib.sha256(store.get_bytes(key)).hexdigest()}\n".encode())
    return digest.hexdigest()
