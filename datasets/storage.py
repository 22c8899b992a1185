"""Local folders and ``s3://bucket/prefix`` behind one small set of functions.

Parquet goes through polars' native object store (``storage_options``); small JSON objects and uploads go
through boto3, imported lazily so a local-only process never pays for it. The endpoint comes from
``AWS_ENDPOINT_URL`` (moto, SeaweedFS, MinIO), as both clients honour it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

S3_SCHEME = "s3://"


def is_s3(url: str) -> bool:
    return url.startswith(S3_SCHEME)


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for either a folder or an s3 prefix (no OS separators inside s3 keys)."""
    if is_s3(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root, *parts))


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    bucket, _, key = url[len(S3_SCHEME) :].partition("/")
    return bucket, key


def storage_options(url: str) -> dict[str, str] | None:
    """polars ``storage_options`` for ``url``: None for a local path, the endpoint/region for s3."""
    if not is_s3(url):
        return None
    options: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["aws_endpoint_url"] = endpoint
        if endpoint.startswith("http://"):
            options["aws_allow_http"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["aws_region"] = region
    return options


def _s3_client() -> Any:
    import boto3  # type: ignore[import-untyped]  # lazy: only s3 datasets need it

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def read_bytes(url: str) -> bytes:
    """The whole object or file; ``FileNotFoundError`` when it does not exist (either backend)."""
    if not is_s3(url):
        return Path(url).read_bytes()
    client = _s3_client()
    bucket, key = split_s3(url)
    try:
        body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        raise FileNotFoundError(url) from None
    return body


def write_bytes(url: str, data: bytes) -> None:
    """Write atomically: a local file appears complete or not at all (tmp + rename); an s3 PUT is atomic."""
    if is_s3(url):
        bucket, key = split_s3(url)
        _s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def exists(url: str) -> bool:
    if not is_s3(url):
        return Path(url).exists()
    client = _s3_client()
    bucket, key = split_s3(url)
    response = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(item["Key"] == key for item in response.get("Contents", []))


def list_files(url: str, suffix: str = "") -> list[str]:
    """Every file under ``url`` (recursively) ending in ``suffix``, sorted; used only without a manifest."""
    if not is_s3(url):
        root = Path(url)
        return sorted(str(p) for p in root.rglob(f"*{suffix}") if p.is_file()) if root.exists() else []
    client = _s3_client()
    bucket, prefix = split_s3(url.rstrip("/") + "/")
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", []))
    return sorted(f for f in found if f.endswith(suffix))


def put_file(write: Any, url: str) -> str:
    """Run ``write(local_path)`` and place the result at ``url``; returns the sha256 of the bytes written.

    Local targets are written to a temporary name beside the target then renamed; s3 targets are written to a
    temporary folder and uploaded, so partially written objects never exist.
    """
    if is_s3(url):
        with tempfile.TemporaryDirectory(prefix="measures-") as tmp:
            local = Path(tmp, "part.parquet")
            write(str(local))
            digest = _sha256_file(local)
            bucket, key = split_s3(url)
            _s3_client().upload_file(str(local), bucket, key)
            return digest
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(str(tmp_path))
    digest = _sha256_file(tmp_path)
    os.replace(tmp_path, path)
    return digest


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove(url: str) -> None:
    """Delete a file or object if it exists (the old manifest, before a lake is rewritten)."""
    if is_s3(url):
        bucket, key = split_s3(url)
        _s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        Path(url).unlink(missing_ok=True)
