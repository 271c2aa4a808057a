"""``otel-efa deploy upload``: build the node bundle and put it in S3 (replaces the quick-start's
``upload-monitoring-scripts.sh``).

The bundle is what a compute node's installer and the head node's hook fetch: the agent's wheel (built
from this source tree with ``pip wheel --no-deps``), the ``otel-config/``, ``systemd/``, ``adot/`` and
``parallelcluster/`` directories as far as they exist, and ``SHA256SUMS`` over all of them (a node can
check with ``sha256sum -c``). Every object is sent with its SHA-256 so S3 rejects a corrupted upload.
The bucket is created when missing; older agent wheels under the prefix are removed so a node never
installs a stale one.
"""
import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from otel_efa.config import ConfigError

BUNDLE_DIRECTORIES = ("otel-config", "systemd", "adot", "parallelcluster")
MANIFEST = "SHA256SUMS"
DEFAULT_PREFIX = "otel-efa"


def source_root(given: Optional[str] = None) -> Path:
    """The source tree to bundle: ``--source``, else the checkout this package runs from."""
    candidates = [Path(given)] if given else [Path(__file__).resolve().parent.parent, Path.cwd()]
    for candidate in candidates:
        project = candidate / "pyproject.toml"
        if project.is_file() and 'name = "otel-efa"' in project.read_text(encoding="utf-8"):
            return candidate
    raise ConfigError("--source", "no otel-efa source tree found (a directory with its pyproject.toml); "
                      "run from a checkout or pass --source DIR")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_bundle(source: Path, out: Path) -> List[str]:
    """Write the bundle under ``out``; returns its files, relative, manifest last."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
                             str(out), str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the wheel failed:\n{result.stderr.strip()}")
    files = sorted(p.name for p in out.glob("otel_efa-*.whl"))
    for directory in BUNDLE_DIRECTORIES:
        for path in sorted((source / directory).rglob("*")) if (source / directory).is_dir() else []:
            relative = path.relative_to(source)
            if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
                (out / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out / relative)
                files.append(relative.as_posix())
    write_manifest(out, files)
    return files + [MANIFEST]


def write_manifest(out: Path, files: List[str]) -> None:
    """``SHA256SUMS`` over ``files`` (relative to ``out``), in ``sha256sum -c`` format: the node script
    checks the synced bundle with it before it installs anything."""
    (out / MANIFEST).write_text("".join(f"{sha256(out / f)}  {f}\n" for f in files), encoding="utf-8")


def ensure_bucket(s3, bucket: str, region: str) -> bool:
    """True when the bucket had to be created."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 403:
            raise ConfigError("--bucket", f"{bucket} exists but this account may not use it") from None
        if status != 404:
            raise
    arguments: Dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**arguments)
    return True


def upload(bundle: Path, files: List[str], bucket: str, region: str, prefix: str) -> List[str]:
    from otel_efa.cloudwatch.session import client

    s3 = client("s3", region)
    if ensure_bucket(s3, bucket, region):
        print(f"created bucket s3://{bucket} in {region}")
    prefix = prefix.strip("/")
    keys = []
    for name in files:
        key = f"{prefix}/{name}" if prefix else name
        data = (bundle / name).read_bytes()
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        s3.put_object(Bucket=bucket, Key=key, Body=data, ChecksumSHA256=checksum)
        keys.append(key)
        print(f"uploaded s3://{bucket}/{key}")
    wheel_prefix = f"{prefix}/otel_efa-" if prefix else "otel_efa-"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=wheel_prefix).get("Contents", [])
    for stale in (o["Key"] for o in listed if o["Key"].endswith(".whl") and o["Key"] not in keys):
        s3.delete_object(Bucket=bucket, Key=stale)
        print(f"removed stale s3://{bucket}/{stale}")
    return keys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("deploy", help="ship the agent to a cluster")
    actions = p.add_subparsers(dest="deploy_action", metavar="ACTION")
    actions.required = True
    up = actions.add_parser("upload", help="build the node bundle and upload it to S3")
    up.add_argument("--bucket", required=True, help="S3 bucket the compute nodes fetch the bundle from")
    up.add_argument("--region", required=True, help="the bucket's AWS region")
    up.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default {DEFAULT_PREFIX})")
    up.add_argument("--source", help="the otel-efa source tree (default: the checkout this runs from)")
    up.set_defaults(handler=_upload)


def require_credentials() -> None:
    """Fail as the first S3 call would (an unknown AWS_PROFILE, no credentials), before the wheel is built."""
    import boto3
    from botocore.exceptions import NoCredentialsError

    if boto3.session.Session().get_credentials() is None:  # an unknown profile raises ProfileNotFound here
        raise NoCredentialsError()


def _upload(args) -> int:
    source = source_root(args.source)
    require_credentials()
    with tempfile.TemporaryDirectory(prefix="otel-efa-bundle-") as directory:
        bundle = Path(directory)
        try:
            files = build_bundle(source, bundle)
        except RuntimeError as e:
            sys.stderr.write(f"otel-efa: {e}\n")
            return 1
        upload(bundle, files, args.bucket, args.region, args.prefix)
    where = f"s3://{args.bucket}/{args.prefix.strip('/')}"
    print(f"bundle: {len(files)} files at {where}/ (nodes: aws s3 sync {where}/ /opt/otel-efa/bundle/)")
    return 0


