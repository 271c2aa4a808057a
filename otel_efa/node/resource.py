"""The OTel Resource: service.name=otel-efa, EC2 identity from IMDSv2, then OTEL_* variables on top.

``service.instance.id`` is the EC2 instance id (else the host name): through a collector's
``prometheusremotewrite`` it becomes the ``instance`` label, which must name the node, as the head node's
scrape config makes it, so that EFA and DCGM series of one node join (a random id would not).
"""
import socket
from typing import Dict, Optional

from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from otel_efa import __version__, names
from otel_efa.node.imds import ImdsClient

SERVICE_NAME = "otel-efa"
CLUSTER_NAME = "aws.parallelcluster.cluster_name"


def ec2_attributes(imds: ImdsClient) -> Dict[str, str]:
    """Semantic-convention attributes for this EC2 instance; {} off EC2."""
    document = imds.identity()
    mapping = {
        "instanceId": "host.id",
        "instanceType": "host.type",
        "region": "cloud.region",
        "availabilityZone": "cloud.availability_zone",
        "accountId": "cloud.account.id",
        "imageId": "host.image.id",
    }
    attributes = {attr: str(document[key]) for key, attr in mapping.items() if document.get(key)}
    if attributes:
        attributes.update({"cloud.provider": "aws", "cloud.platform": "aws_ec2"})
    return attributes


def build_resource(imds: Optional[ImdsClient] = None, extra: Optional[Dict[str, str]] = None,
                   cluster_name: Optional[str] = None) -> Resource:
    """EC2 detection first, our defaults, then OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME win."""
    attributes: Dict[str, str] = {"service.name": SERVICE_NAME, "service.version": __version__}
    attributes.update(ec2_attributes(imds or ImdsClient()))
    if cluster_name:
        attributes[CLUSTER_NAME] = cluster_name
    attributes.update(extra or {})
    from_environment = OTELResourceDetector().detect()
    # The SDK would make service.instance.id a random UUID; OTEL_RESOURCE_ATTRIBUTES still wins.
    attributes["service.instance.id"] = str(from_environment.attributes.get("host.id")
                                            or attributes.get("host.id") or socket.gethostname())
    return _as_text(Resource.create(attributes).merge(from_environment))


def _as_text(resource: Resource) -> Resource:
    """Keys and string values as valid UTF-8 (names.escape): the environment hands Python bytes that
    are not UTF-8 as surrogates, and one such string would make every OTLP export and scrape fail."""
    attributes = {names.escape(k): names.escape(v) if isinstance(v, str) else v
                  for k, v in resource.attributes.items()}
    if attributes == dict(resource.attributes):
        return resource
    return Resource(attributes, resource.schema_url)
