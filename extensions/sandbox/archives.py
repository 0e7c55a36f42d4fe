"""Backup artifacts for tests and benchmarks: file trees, tar.gz archives, S3 objects with a sha256 sidecar."""

import hashlib
import io
import pathlib
import tarfile


def tree(path):
    """{relative path: bytes} of every file under ``path``."""
    path = pathlib.Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def tar_gz(files):
    """A reproducible .tar.gz of {relative path: bytes} (file members only, fixed mode and time)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def put_with_sidecar(s3, bucket, key, body):
    """Upload ``body`` with an S3 SHA-256 checksum and a ``<key>.sha256`` sidecar (sha256sum format)."""
    s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=bucket, Key=key + ".sha256",
                  Body=("%s  %s\n" % (hashlib.sha256(body).hexdigest(), key.rsplit("/", 1)[-1])).encode())
