"""``otel-efa deploy upload`` against moto's S3 in server mode: every bundle file lands, checksums match."""
import hashlib
import zipfile
from io import BytesIO
from pathlib import Path

import boto3
import pytest
from aws_peers import aws_environment, moto  # noqa: F401

from otel_efa.cli import main

SOURCE = Path(__file__).resolve().parent.parent


@pytest.fixture
def s3(moto, monkeypatch):
    moto.reset()
    aws_environment(monkeypatch, moto.url)
    return boto3.client("s3", region_name="eu-west-1", endpoint_url=moto.url)


def expected_files():
    """The bundle's non-wheel files, found here independently of the code under test."""
    files = set()
    for directory in ("otel-config", "systemd", "adot", "parallelcluster"):
        for path in (SOURCE / directory).rglob("*") if (SOURCE / directory).is_dir() else []:
            if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith("."):
                files.add(path.relative_to(SOURCE).as_posix())
    return files


def test_upload_creates_the_bucket_and_lands_every_file_intact(s3, capsys):
    bucket = "otel-efa-bundle-test"
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert main(["deploy", "upload", "--bucket", bucket, "--region", "eu-west-1", "--prefix", "clusters/otel-efa"]) == 0
    assert f"created bucket s3://{bucket}" in capsys.readouterr().out
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"

    objects = {o["Key"][len("clusters/otel-efa/"):]: o for o in
               s3.list_objects_v2(Bucket=bucket, Prefix="clusters/otel-efa/")["Contents"]}
    body = {key: s3.get_object(Bucket=bucket, Key=f"clusters/otel-efa/{key}")["Body"].read() for key in objects}
    wheels = [k for k in objects if k.startswith("otel_efa-") and k.endswith(".whl")]
    assert len(wheels) == 1
    assert "parallelcluster/headnode-create-dashboard.sh" in expected_files()
    assert set(objects) == expected_files() | {wheels[0], "SHA256SUMS"}

    for name in expected_files():  # byte for byte what the source tree holds
        assert hashlib.sha256(body[name]).hexdigest() == hashlib.sha256((SOURCE / name).read_bytes()).hexdigest()
    manifest = dict(reversed(line.split("  ", 1)) for line in body["SHA256SUMS"].decode().splitlines())
    assert set(manifest) == set(objects) - {"SHA256SUMS"}
    for name, digest in manifest.items():
        assert hashlib.sha256(body[name]).hexdigest() == digest
    with zipfile.ZipFile(BytesIO(body[wheels[0]])) as wheel:
        names = wheel.namelist()
    assert "otel_efa/exporters/cloudwatch.py" in names and "otel_efa/artifacts/dashboards/cloudwatch.py" in names


def test_upload_without_a_source_tree_says_so(s3, tmp_path, capsys):
    assert main(["deploy", "upload", "--bucket", "b", "--region", "us-east-1", "--source", str(tmp_path)]) == 2
    assert "--source" in capsys.readouterr().err
