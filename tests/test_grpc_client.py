"""The fast path's gRPC client (otel_efa/exporters/grpc_client.py, pure Python over h2) against a real gRPC
server: grpcio's in this process (the tests' GrpcReceiver, or a MetricsService with a behaviour of its own),
with a TCP relay where the bytes on the wire are the proof. Flow control both ways, gzip both ways, one
connection kept, statuses, restarts and GOAWAY, TLS and mutual TLS, metadata. Peers that are no gRPC server
are test_grpc_client_peers.py's.
"""
import os
import threading
import time
from concurrent import futures
from typing import List

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from otlp_receiver import GrpcReceiver
from tcp_relay import TcpRelay
from tls_certs import make_pki
from waiting import wait_until

from otel_efa.exporters.otlp_transport import REPLY_BODY_CAP, ExportFailed, GrpcSender

Request = metrics_service_pb2.ExportMetricsServiceRequest


def request_of_size(size: int) -> Request:
    """A request of about ``size`` bytes whose every resource differs (gzip cannot make it small)."""
    request = Request()
    while request.ByteSize() < size:
        request.resource_metrics.add().schema_url = os.urandom(512).hex()
    return request


def sender(endpoint: str, timeout: float = 5.0, gzip: bool = False, headers=(), **tls) -> GrpcSender:
    return GrpcSender(endpoint, headers, timeout, gzip, insecure=not endpoint.startswith("https"), **tls)


@pytest.fixture
def receiver():
    r = GrpcReceiver()
    yield r
    r.stop()


def test_a_large_request_waits_for_the_peers_windows_and_arrives_whole(receiver):
    """A p5.48xlarge export is 100+ KiB; HTTP/2's initial window is 64 KiB: past it, the client must wait for
    grpcio's WINDOW_UPDATEs (sending on would be a FLOW_CONTROL_ERROR)."""
    request = request_of_size(400 * 1024)
    grpc_sender = sender(receiver.endpoint)
    try:
        for _ in range(2):
            grpc_sender.send(request.SerializeToString())
    finally:
        grpc_sender.close()
    assert [r for r in receiver.wait_for(2, 10)] == [request, request]


def test_a_large_reply_is_read_through_the_receive_windows(receiver):
    """A reply bigger than the 64 KiB the client's windows start with arrives whole (it acknowledges what it
    reads, so the server may send more); the partial success is parsed from it."""
    receiver.reply.partial_success.rejected_data_points = 7
    receiver.reply.partial_success.error_message = os.urandom(150 * 1024).hex()  # 300 KiB
    grpc_sender = sender(receiver.endpoint)
    try:
        response = grpc_sender.send(Request().SerializeToString())
    finally:
        grpc_sender.close()
    assert response.partial_success.rejected_data_points == 7
    assert response.partial_success.error_message == receiver.reply.partial_success.error_message


def test_a_reply_larger_than_the_cap_is_refused(receiver):
    receiver.reply.partial_success.error_message = "x" * (REPLY_BODY_CAP + 1000)
    grpc_sender = sender(receiver.endpoint)
    try:
        with pytest.raises(ExportFailed) as raised:
            grpc_sender.send(Request().SerializeToString())
        receiver.reply.partial_success.error_message = "fine"
        assert grpc_sender.send(Request().SerializeToString()).partial_success.error_message == "fine"
    finally:
        grpc_sender.close()
    assert str(raised.value).startswith("RESOURCE_EXHAUSTED: the reply is larger than"), raised.value


def test_gzip_both_ways_and_one_connection_for_every_export():
    """gzip on the request (its bytes on the wire are fewer than the request's); the server (compression=gzip) compresses its reply too, which
    the relay sees (the reply's repeated text is not on the wire) and the client inflates. Three exports, one
    TCP connection."""
    reply_text = "compressible " * 2000
    server = GrpcReceiver()
    server.server.stop(None).wait()
    server.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), compression=grpc.Compression.Gzip)
    # The receiver's own servicer, on a server that compresses what it sends.
    servicer = _ExportServicer(lambda request, context: (server.add(request, dict(context.invocation_metadata())),
                                                         server.reply)[1])
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, server.server)
    server.port = server.server.add_insecure_port("127.0.0.1:0")
    server.server.start()
    server.reply.partial_success.error_message = reply_text
    relay = TcpRelay(server.port)
    request = request_of_size(20 * 1024)
    grpc_sender = sender(relay.endpoint, gzip=True)
    try:
        responses = [grpc_sender.send(request.SerializeToString()) for _ in range(3)]
    finally:
        grpc_sender.close()
        relay.stop()
        server.stop()
    assert [r.partial_success.error_message for r in responses] == [reply_text] * 3
    assert server.requests[-1][1] == request
    assert len(relay.requests) < 0.7 * 3 * request.ByteSize()  # hex: gzip halves it (grpcio hides grpc-encoding)
    assert b"compressible compressible" not in relay.replies and len(relay.replies) < len(reply_text)
    assert relay.connections == 1


class _ExportServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, export):
        self._export = export

    def Export(self, request, context):  # noqa: N802 - the generated servicer's name
        return self._export(request, context)


def _server(export, port: int = 0):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_ExportServicer(export), server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port


def test_a_status_and_its_percent_encoded_message_from_the_trailers():
    def refuse(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "token rejected: 100% wrong, ü")

    server, port = _server(refuse)
    grpc_sender = sender(f"http://127.0.0.1:{port}", headers=[("Authorization", "Bearer x")])
    try:
        with pytest.raises(ExportFailed) as raised:
            grpc_sender.send(Request().SerializeToString())
    finally:
        grpc_sender.close()
        server.stop(None).wait()
    assert str(raised.value) == "UNAUTHENTICATED: token rejected: 100% wrong, ü"


def test_the_collector_restarting_between_exports_costs_no_export():
    """grpcio's server stops (GOAWAY, then the socket closes) and another starts on the same port: the next
    export goes out on a new connection, at once, without a failure."""
    arrived = []
    server, port = _server(lambda request, context: (arrived.append(request),
                                                     metrics_service_pb2.ExportMetricsServiceResponse())[1])
    grpc_sender = sender(f"http://127.0.0.1:{port}")
    try:
        grpc_sender.send(request_of_size(100).SerializeToString())
        server.stop(grace=1).wait()
        server, _ = _server(lambda request, context: (arrived.append(request),
                                                      metrics_service_pb2.ExportMetricsServiceResponse())[1], port)
        started = time.monotonic()
        grpc_sender.send(request_of_size(100).SerializeToString())
        took = time.monotonic() - started
    finally:
        grpc_sender.close()
        server.stop(None).wait()
    assert len(arrived) == 2
    print(f"first export after the restart: {took * 1000:.1f} ms")


GOAWAY = 0x7  # the HTTP/2 frame type


def frame_types(data: bytes) -> List[int]:
    """The types of the HTTP/2 frames a server sent (it opens with a frame: no preface on its side)."""
    types, at = [], 0
    while at + 9 <= len(data):
        types.append(data[at + 3])
        at += 9 + int.from_bytes(data[at:at + 3], "big")
    return types


def test_a_graceful_goaway_during_an_export_lets_it_finish():
    """The collector is asked to stop (grace 10 s) while an export is being handled: grpcio sends GOAWAY
    (seen on the wire by a relay), then the reply; the client takes the reply (h2 alone would close at the
    GOAWAY) and makes a new connection for the next export."""
    handling, release = threading.Event(), threading.Event()

    def slow(request, context):
        handling.set()
        release.wait(10)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    server, port = _server(slow)
    relay = TcpRelay(port)
    grpc_sender = sender(relay.endpoint)
    outcome: List[object] = []
    thread = threading.Thread(target=lambda: outcome.append(send_or_fail(grpc_sender)))
    thread.start()
    try:
        assert handling.wait(10)
        stopped = server.stop(grace=10)
        wait_until(lambda: GOAWAY in frame_types(bytes(relay.replies)), 10, "the GOAWAY")
        release.set()
        thread.join(10)
        stopped.wait()
        server, _ = _server(lambda request, context: metrics_service_pb2.ExportMetricsServiceResponse(), port)
        grpc_sender.send(Request().SerializeToString())
    finally:
        release.set()
        grpc_sender.close()
        relay.stop()
        server.stop(None).wait()
    assert outcome and not isinstance(outcome[0], ExportFailed), outcome
    assert relay.connections == 2


def send_or_fail(grpc_sender: GrpcSender):
    try:
        return grpc_sender.send(Request().SerializeToString())
    except ExportFailed as e:
        return e


def test_tls_with_a_private_ca_and_mutual_tls(tmp_path):
    pki = make_pki(tmp_path / "pki")
    key, cert, ca = pki.server_key.read_bytes(), pki.server_cert.read_bytes(), pki.ca.read_bytes()
    plain = GrpcReceiver(tls=(key, cert))
    mutual = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    arrived = []
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_ExportServicer(
        lambda request, context: (arrived.append(request), metrics_service_pb2.ExportMetricsServiceResponse())[1]),
        mutual)
    mutual_port = mutual.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True))
    mutual.start()
    mutual_endpoint = f"https://127.0.0.1:{mutual_port}"
    client = dict(client_key=str(pki.client_key), client_certificate=str(pki.client_cert))
    try:
        with pytest.raises(ExportFailed) as unknown_ca:
            sender(plain.endpoint).send(b"")
        sender(plain.endpoint, certificate=str(pki.ca)).send(b"")
        with pytest.raises(ExportFailed) as no_client_certificate:
            sender(mutual_endpoint, certificate=str(pki.ca)).send(b"")
        sender(mutual_endpoint, certificate=str(pki.ca), **client).send(b"")
    finally:
        plain.stop()
        mutual.stop(None).wait()
    assert str(unknown_ca.value).startswith("UNAVAILABLE: TLS handshake"), unknown_ca.value
    assert "CERTIFICATE_VERIFY_FAILED" in str(unknown_ca.value), unknown_ca.value
    assert str(no_client_certificate.value).startswith("UNAVAILABLE: "), no_client_certificate.value
    assert len(plain.requests) == 1 and len(arrived) == 1


def test_metadata_grpc_cannot_carry_is_one_line_and_nothing_sent(receiver):
    """A header value with a line break (OTEL_EXPORTER_OTLP_HEADERS is percent-decoded: %0A) or a name
    gRPC reserves is refused before anything is sent; good metadata arrives lowercased."""
    for headers, words in ([("Authorization", "Bearer x\nInjected: 1")], "not printable ASCII"), \
                          ([("grpc-timeout", "1S")], "is not one gRPC metadata can have"):
        with pytest.raises(ExportFailed) as raised:
            sender(receiver.endpoint, headers=headers).send(b"")
        assert str(raised.value).startswith("INTERNAL: ") and words in str(raised.value), raised.value
    assert not receiver.requests
    sender(receiver.endpoint, headers=[("X-Tenant", "efa-team")]).send(b"")
    assert receiver.wait_for(1, 10) and receiver.headers[0]["x-tenant"] == "efa-team"
