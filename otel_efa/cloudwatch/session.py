"""Where and as whom the node talks to CloudWatch: region, instance id, and the boto3 client.

Nothing here runs at import. The client is built by the exporter's sender thread on first use, with
botocore's own retry modes (standard or adaptive: exponential backoff with jitter, retry quota,
throttling detection) instead of a hand-written loop. ``AWS_ENDPOINT_URL`` is honoured by botocore,
which is how the tests point the agent at moto.
"""
import os
from typing import Any, Mapping, Optional

from opentelemetry.sdk.resources import Resource

from otel_efa import __version__
from otel_efa.config import ConfigError
from otel_efa.node.imds import ImdsClient


def resolve_region(configured: Optional[str], resource: Optional[Resource] = None,
                   imds: Optional[ImdsClient] = None, environ: Mapping[str, str] = os.environ) -> str:
    """Config, then AWS_REGION / AWS_DEFAULT_REGION, then IMDS (via the resource, else asked now).

    Never returns None: a node that cannot find its region says so at start-up (exit 2) instead of
    failing every send with NoRegionError.
    """
    for candidate in (configured, environ.get("AWS_REGION"), environ.get("AWS_DEFAULT_REGION")):
        if candidate:
            return candidate
    detected = resource.attributes.get("cloud.region") if resource is not None else None
    if not detected:
        detected = (imds or ImdsClient(environ=environ)).get("meta-data/placement/region")
    if detected:
        return str(detected).strip()
    raise ConfigError("cloudwatch.region", "no region: set it, or AWS_REGION / AWS_DEFAULT_REGION "
                      "(the instance metadata service did not answer)")


def resolve_instance_id(resource: Resource) -> str:
    """The ``InstanceId`` dimension: the resource's host.id (IMDSv2, or OTEL_RESOURCE_ATTRIBUTES)."""
    instance_id = resource.attributes.get("host.id")
    if not instance_id:
        raise ConfigError("OTEL_RESOURCE_ATTRIBUTES", "no host.id for the InstanceId dimension: the "
                          "instance metadata service did not answer; set host.id=i-... there")
    return str(instance_id)


def client(service: str, region: str, retry_mode: str = "standard", max_attempts: int = 5) -> Any:
    """A boto3 client on its own session (no process-wide default session)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": retry_mode, "max_attempts": max_attempts},
        connect_timeout=3,
        read_timeout=10,
        user_agent_extra=f"otel-efa/{__version__}",
        request_min_compression_size_bytes=10240,  # botocore's default, stated: gzip large calls
    )
    return boto3.session.Session().client(service, region_name=region, config=config)
