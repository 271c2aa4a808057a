"""The agent's OTLP request is what the SDK's exporter sends for the same instruments, and it arrives.

One Snapshot of a rich node (tests/rich_node.py) goes through the SDK (InMemoryMetricReader, then the
SDK's ``encode_metrics``) and through the agent's encoder; the two decoded requests are compared metric by
metric (name, description, unit, kind, monotonicity, temporality) and point by point (attributes, value
field and value), timestamps aside. The SDK's encoder raises on a counter at or above 2**63, so that
comparison leaves it out; the export test then sends one, through the agent's exporter to real receivers
(gRPC and http/protobuf, gzip), with a collector that rejects part of the export.
"""
import logging

import pytest
from changing_intervals import intervals_with_changing_series
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from otlp_receiver import GrpcReceiver, HttpReceiver, metrics_with_points
from rich_node import HUGE, ODD_TEXT, PROFILE, RESOURCE, RichNode

from otel_efa import __version__
from otel_efa.config import Config, OtlpConfig
from otel_efa.exporters import ExporterContext
from otel_efa.exporters.otlp import OtlpExporter
from otel_efa.exporters.otlp_encoder import OtlpEncoder


def _request(body: bytes) -> ExportMetricsServiceRequest:
    """The encoder's bytes parsed, and checked to be what protobuf itself writes for that message (field
    order, lengths), so the template's bytes are the same as serializing the message would give."""
    request = ExportMetricsServiceRequest.FromString(body)
    assert request.SerializeToString() == body
    return request


def _decoded(request):
    """({resource attributes}, (scope name, version), [(metric header, {attributes: (value field, value)})])."""
    assert len(request.resource_metrics) == 1
    resource_metrics = request.resource_metrics[0]
    resource = {kv.key: kv.value for kv in resource_metrics.resource.attributes}
    ours = [s for s in resource_metrics.scope_metrics if s.scope.name == "otel_efa"]  # not the SDK's own
    assert len(ours) == 1
    return resource, (ours[0].scope.name, ours[0].scope.version), metrics_with_points(ours[0])


def test_same_metrics_points_attributes_and_values_as_the_sdk_encoder(make_simulator):
    node = RichNode(make_simulator(PROFILE), huge=False)
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    try:
        node.instrument(provider)
        snapshot = node.collect()
        expected = encode_metrics(reader.get_metrics_data())
        ours = _request(OtlpEncoder(RESOURCE, "otel_efa", __version__).encode(node.interval))
    finally:
        provider.shutdown()
        node.close()
    expected_resource, expected_scope, expected_metrics = _decoded(expected)
    resource, scope, metrics = _decoded(ours)
    assert resource == expected_resource
    assert scope == expected_scope == ("otel_efa", __version__)
    assert [header for header, _ in metrics] == [header for header, _ in expected_metrics]
    for (header, points), (_, expected_points) in zip(metrics, expected_metrics):
        assert points == expected_points, header[0]
    # The comparison covered the rich parts, and values are the Snapshot's (not two empty requests).
    by_name = {header[0]: points for header, points in metrics}
    assert "efa_future_bytes" in by_name
    assert any(ODD_TEXT.encode() in value for points in by_name.values() for attrs in points for _, value in attrs)
    device = snapshot.devices[0]
    rx = [v for attrs, v in by_name["efa_rx_bytes"].items() if device.name.encode() in dict(attrs)["aws.efa.device"]]
    assert rx == [("as_int", device.ports[0].counters["rx_bytes"])]
    assert sum(len(points) for points in by_name.values()) > 300


def test_sums_start_with_the_agent_and_points_carry_the_snapshot_time(make_simulator):
    node = RichNode(make_simulator(PROFILE))
    provider = MeterProvider(resource=RESOURCE)
    try:
        node.instrument(provider)
        snapshot = node.collect()
        encoder = OtlpEncoder(RESOURCE, "otel_efa", __version__, start_time_unix_nano=123)
        first = _request(encoder.encode(node.interval))
        later = node.collect()
        second = _request(encoder.encode(node.interval))
    finally:
        provider.shutdown()
        node.close()
    for request, taken in ((first, snapshot), (second, later)):
        for metric in request.resource_metrics[0].scope_metrics[0].metrics:
            data = getattr(metric, metric.WhichOneof("data"))
            for point in data.data_points:
                assert point.time_unix_nano == int(taken.wall_time * 1e9)
                assert point.start_time_unix_nano == (123 if metric.WhichOneof("data") == "sum" else 0)
    collections = [m for m in second.resource_metrics[0].scope_metrics[0].metrics if m.name == "otel_efa_collections"]
    assert collections[0].sum.data_points[0].as_int == later.collections  # templates took the new values


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_gzip_export_arrives_with_a_huge_counter_as_double_and_a_rejection_logged_once(protocol, make_simulator,
                                                                                        caplog):
    caplog.set_level(logging.INFO)
    node = RichNode(make_simulator(PROFILE))
    provider = MeterProvider(resource=RESOURCE)
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    receiver.reply.partial_success.rejected_data_points = 3
    receiver.reply.partial_success.error_message = "3 points too old"
    config = Config(otlp=OtlpConfig(endpoint=receiver.endpoint, protocol=protocol, compression="gzip"))
    exporter = OtlpExporter(ExporterContext(config, RESOURCE))
    try:
        node.instrument(provider)
        snapshot = node.collect()
        exporter.start()
        assert exporter.export_now(node.interval) and exporter.export_now(node.interval)
        requests = receiver.wait_for(2, timeout=5)
    finally:
        exporter.shutdown(2.0)
        receiver.stop()
        provider.shutdown()
        node.close()
    assert len(requests) >= 2
    metrics = {m.name: m for m in requests[-1].resource_metrics[0].scope_metrics[0].metrics}
    huge_device = snapshot.devices[0].name
    values = {dict((kv.key, kv.value.string_value) for kv in p.attributes)["aws.efa.device"]: p
              for p in metrics["efa_rdma_write_wr_err"].sum.data_points}
    assert values[huge_device].WhichOneof("value") == "as_double" and values[huge_device].as_double == float(HUGE)
    others = [p for device, p in values.items() if device != huge_device]
    assert others and all(p.WhichOneof("value") == "as_int" for p in others)
    rejections = [r for r in caplog.records if "rejected 3 data points" in r.getMessage()]
    assert len(rejections) == 1 and "3 points too old" in rejections[0].getMessage()
    if protocol == "http/protobuf":  # (gRPC's message compression is not visible to a servicer)
        assert receiver.headers[-1]["content-encoding"] == "gzip"


def _self_signed_loopback_certificate():
    """(key PEM, certificate PEM) for 127.0.0.1, made here so no key material lives in the repository."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otel-efa test collector")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def test_grpc_over_tls_trusts_the_certificate_variable_and_nothing_else(make_simulator, tmp_path, monkeypatch):
    """https:// means TLS (not insecure): with the collector's CA in OTEL_EXPORTER_OTLP_CERTIFICATE the export
    arrives; without it the handshake fails and the export is reported as failing, not sent in clear."""
    key_pem, certificate_pem = _self_signed_loopback_certificate()
    ca_file = tmp_path / "collector-ca.pem"
    ca_file.write_bytes(certificate_pem)
    node = RichNode(make_simulator(PROFILE))
    provider = MeterProvider(resource=RESOURCE)
    receiver = GrpcReceiver(tls=(key_pem, certificate_pem))
    exporters = []
    try:
        node.instrument(provider)
        node.collect()
        for trusted in (True, False):
            if trusted:
                monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(ca_file))
            else:
                monkeypatch.delenv("OTEL_EXPORTER_OTLP_CERTIFICATE")
            exporter = OtlpExporter(ExporterContext(Config(otlp=OtlpConfig(endpoint=receiver.endpoint, timeout=3.0)),
                                                    RESOURCE))
            exporters.append(exporter)
            assert exporter.settings.insecure is False
            exporter.start()
            assert exporter.export_now(node.interval) is trusted
        requests = receiver.wait_for(1, timeout=5)
    finally:
        for exporter in exporters:
            exporter.shutdown(1.0)
        receiver.stop()
        provider.shutdown()
        node.close()
    assert len(requests) == 1  # the trusted export only
    assert exporters[1].reporter.failing_since is not None


def _any_value(value):
    """An attribute value as opentelemetry-proto's AnyValue, by the encoder's rules (bool before int, an
    int outside int64 as a double, anything unknown as its str)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValueList

    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value) if -2 ** 63 <= value < 2 ** 63 else AnyValue(double_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=_key_values(value)))
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[_any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def _key_values(attributes):
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    return [KeyValue(key=k, value=_any_value(v)) for k, v in attributes.items()]


def _reference_bytes(frame, start: int) -> bytes:
    """The request the encoder's semantics describe, built message by message with opentelemetry-proto
    (counters cumulative monotonic Sums from ``start``, as_int for an int in int64, else as_double)."""
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    from otel_efa.catalog import Kind

    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(_key_values(RESOURCE.attributes))
    resource_metrics.schema_url = RESOURCE.schema_url or ""
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name, scope_metrics.scope.version = "otel_efa", __version__
    for spec, points in frame.metrics:
        metric = scope_metrics.metrics.add(name=spec.name, description=spec.description, unit=spec.unit)
        if spec.kind is Kind.COUNTER:
            data = metric.sum
            data.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
            data.is_monotonic = True
        else:
            data = metric.gauge
        for attributes, value in points:
            point = data.data_points.add(time_unix_nano=int(frame.snapshot.wall_time * 1e9))
            if spec.kind is Kind.COUNTER:
                point.start_time_unix_nano = start
            point.attributes.extend(_key_values(attributes))
            if type(value) is int and -2 ** 63 <= value < 2 ** 63:
                point.as_int = value
            else:
                point.as_double = value
    return request.SerializeToString()


def test_the_template_follows_every_change_of_series_values_and_kinds_byte_for_byte():
    """One encoder through intervals that change (kept layouts, metrics encoded anew, value kinds switching):
    every request equals, byte for byte, the same request built message by message, and a new encoder's."""
    start = 1_690_000_000_000_000_000
    encoder = OtlpEncoder(RESOURCE, "otel_efa", __version__, start_time_unix_nano=start)
    for frame in intervals_with_changing_series():
        ours = encoder.encode(frame)
        assert ours == _reference_bytes(frame, start), frame.snapshot.collections
        assert ours == OtlpEncoder(RESOURCE, "otel_efa", __version__, start_time_unix_nano=start).encode(frame)
    assert _request(ours).resource_metrics[0].scope_metrics[0].metrics == []  # the last interval had nothing


ODD_VALUES = ["", "text", 'q"uo\\te\n', "ünï", True, False, 0, 1, -1, 2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 63 - 1,
              2 ** 64 - 1, 0.0, -0.0, 1.5, float("inf"), float("nan"), b"", b"\x00\xff", [], [1, "a", [True]],
              ("x", 2.5), {}, {"k": {"n": [1, {"": b"b"}]}}, None, object]


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_attribute_values_of_every_kind_are_the_bytes_protobuf_writes(value):
    """Attributes are written by hand (exporters/protobuf_wire.py): for values of every AnyValue kind (and
    ones that are none, written as their str), an empty key too, the bytes opentelemetry-proto writes."""
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage

    from otel_efa.exporters.protobuf_wire import key_values

    attributes = {"key": value, "": value}
    assert key_values(1, attributes) == ResourceMessage(attributes=_key_values(attributes)).SerializeToString()


def test_the_reply_is_read_as_protobuf_reads_it_and_garbage_is_a_decode_error():
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

    from otel_efa.exporters.protobuf_wire import DecodeError, ExportResponse, parse_export_response

    for rejected, message in ((0, ""), (3, "3 points too old"), (-1, "ünï"), (2 ** 63 - 1, "x" * 300)):
        reply = ExportMetricsServiceResponse()
        reply.partial_success.rejected_data_points = rejected
        reply.partial_success.error_message = message
        # a field this agent does not know, before and after, as a newer collector could send
        body = b"\x10\x05" + reply.SerializeToString() + b"\x1a\x02ab\x25\x01\x02\x03\x04"
        parsed = parse_export_response(body)
        assert parsed.partial_success.rejected_data_points == rejected
        assert parsed.partial_success.error_message == message
    assert parse_export_response(b"") == ExportResponse()
    for garbage in (b"\x0a\x05ab", b"\xff", b"\x0b", b"\x08", b"<html>not a protobuf</html>"):
        with pytest.raises(DecodeError):
            parse_export_response(garbage)
