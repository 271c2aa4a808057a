"""Region and instance id: config, then AWS_REGION / AWS_DEFAULT_REGION, then IMDSv2; never NoRegionError.

IMDS is a small IMDSv2-speaking HTTP server on loopback (token PUT, then GETs with the token).
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aws_peers import FAKE_CREDENTIALS
from conftest import free_port
from opentelemetry.sdk.resources import Resource

from otel_efa.cli import main
from otel_efa.cloudwatch.session import resolve_region
from otel_efa.config import Config, ConfigError
from otel_efa.exporters import ExporterContext
from otel_efa.exporters.cloudwatch import CloudWatchExporter
from otel_efa.node.imds import ImdsClient
from otel_efa.node.resource import build_resource

TOKEN = "token-123"
IDENTITY = {"instanceId": "i-0imds0000000001", "instanceType": "p5en.48xlarge", "region": "eu-north-1",
            "availabilityZone": "eu-north-1a", "accountId": "123456789012"}


@pytest.fixture
def imds():
    paths = {"/latest/dynamic/instance-identity/document": json.dumps(IDENTITY),
             "/latest/meta-data/placement/region": "eu-north-1"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_PUT(self):
            self._reply(200, TOKEN if self.path == "/latest/api/token" else "")

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                return self._reply(401, "")
            self._reply(200, paths[self.path]) if self.path in paths else self._reply(404, "")

        def _reply(self, status, text):
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_config_then_aws_region_then_aws_default_region():
    env = {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "sa-east-1"}
    assert resolve_region("us-west-2", environ=env) == "us-west-2"
    assert resolve_region(None, environ=env) == "ap-south-1"
    assert resolve_region(None, environ={"AWS_DEFAULT_REGION": "sa-east-1"}) == "sa-east-1"


def test_imds_gives_region_and_instance_id(imds):
    environ = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds}
    client = ImdsClient(environ=environ)
    assert resolve_region(None, imds=client, environ=environ) == "eu-north-1"  # asked directly
    resource = build_resource(client)
    exporter = CloudWatchExporter(ExporterContext(Config(), resource))
    assert (exporter.region, exporter.instance_id) == ("eu-north-1", "i-0imds0000000001")


def test_no_region_anywhere_is_a_config_error_not_noregionerror():
    environ = {"AWS_EC2_METADATA_DISABLED": "true"}
    with pytest.raises(ConfigError) as error:
        resolve_region(None, Resource.create({}), environ=environ)
    assert error.value.key == "cloudwatch.region"


def test_the_agent_exits_2_with_one_line_when_region_or_instance_id_is_missing(make_simulator, monkeypatch,
                                                                                 capsys):
    simulator = make_simulator("p4d.24xlarge")
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    run = ["run", "--sysfs", simulator.root, "--exporters", "cloudwatch", "--count", "1", "--config", "/dev/null"]
    assert main(run) == 2
    err = capsys.readouterr().err.strip()
    assert "cloudwatch.region" in err and "\n" not in err
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert main(run) == 2
    err = capsys.readouterr().err.strip()
    assert "host.id" in err and "\n" not in err
