"""The OTLP exporter's settings, decided in one place for the exporter, ``otel-efa doctor`` and the collector
configs, so the address the doctor probes and the receiver the configs open are the ones the agent sends to.

Each setting comes from the first of (OpenTelemetry specification, "OTLP Exporter Configuration", and the
project's own rule that its keys win over the standard variables):

1. the ``otlp.*`` key (config file, then ``OTEL_EFA_OTLP_*``, then flags: ``config.load`` merged those);
2. ``OTEL_EXPORTER_OTLP_METRICS_<NAME>`` (the signal-specific variable);
3. ``OTEL_EXPORTER_OTLP_<NAME>``;
4. the default: the collector on this node, ``http://127.0.0.1:4317`` (grpc) or
   ``http://127.0.0.1:4318/v1/metrics`` (http/protobuf). The specification says ``localhost``; 127.0.0.1 is
   the same collector without depending on how ``localhost`` resolves (``::1`` first on some hosts, where
   the generated collector configs do not listen).

Units and URLs, as the specification has them:

* ``OTEL_EXPORTER_OTLP[_METRICS]_TIMEOUT`` is **milliseconds**. opentelemetry-python reads it as seconds
  (open-telemetry/opentelemetry-python#4044); we follow the specification, and a value under 100 ms, which
  is most likely seconds written for that SDK, is accepted with a warning. The ``otlp.timeout`` key is
  seconds, like every duration in the agent's config.
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` is a base URL: http/protobuf appends ``/v1/metrics``.
  ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is used as is. The ``otlp.endpoint`` key gets ``/v1/metrics`` only
  when it has no path at all (it always did).
* gRPC endpoints may omit the scheme (``collector:4317``); ``OTEL_EXPORTER_OTLP[_METRICS]_INSECURE`` then
  chooses plaintext (``true``) or TLS (default). With a scheme, ``https`` means TLS and ``http`` plaintext.
  The ``otlp.insecure`` key, when set, decides for gRPC whatever the scheme.

Every bad value is a :class:`ConfigError` naming the key or variable it came from (one line, exit status 2):
certificate and key files are opened and parsed here, at start-up, rather than failing on each export.
"""
import math
import os
import re
import ssl
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple
from urllib.parse import urlsplit

from otel_efa.config import ConfigError, OtlpConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"grpc": 4317, "http/protobuf": 4318}  # the OTLP ports (IANA 4317, 4318)
DEFAULT_PROTOCOL = "grpc"
HTTP_METRICS_PATH = "/v1/metrics"
DEFAULT_TIMEOUT_S = 10.0
SECONDS_LIKE_TIMEOUT_MS = 100.0  # below this a TIMEOUT variable was probably written in seconds
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def default_endpoint(protocol: str = DEFAULT_PROTOCOL) -> str:
    """The URL the exporter uses when nothing says otherwise: the collector on this node."""
    path = HTTP_METRICS_PATH if protocol == "http/protobuf" else ""
    return f"http://{DEFAULT_HOST}:{DEFAULT_PORTS[protocol]}{path}"


@dataclass(frozen=True)
class OtlpSettings:
    endpoint: str  # a full URL; for http/protobuf the URL requests are POSTed to
    protocol: str  # grpc | http/protobuf
    headers: Tuple[Tuple[str, str], ...]
    timeout: float  # seconds per export
    compression: str  # gzip | none
    insecure: bool  # True: plaintext; False: TLS
    certificate: Optional[str] = None  # CA bundle that verifies the collector; None: the system's
    client_key: Optional[str] = None  # mutual TLS: this client's private key (PEM) ...
    client_certificate: Optional[str] = None  # ... and its certificate chain (PEM)
    notes: Tuple[str, ...] = ()  # legal but probably unintended choices; the exporter logs each as a warning


def receiver_endpoint(settings: OtlpSettings) -> Tuple[str, int]:
    """(host, port) of the OTLP receiver the exporter sends to: what the doctor connects to."""
    url = urlsplit(settings.endpoint)
    default_port = 443 if url.scheme == "https" else 80
    return url.hostname or DEFAULT_HOST, url.port or default_port


def _pick(key_value, key: str, environ: Mapping[str, str], name: str) -> Tuple[Optional[str], str]:
    """(value, where it came from): the key, else the METRICS variable, else the general one."""
    if key_value is not None:
        return key_value, key
    for variable in (f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(variable, "").strip()
        if value:
            return value, variable
    return None, "default"


def _protocol(config: OtlpConfig, environ: Mapping[str, str]) -> str:
    protocol, source = _pick(config.protocol, "otlp.protocol", environ, "PROTOCOL")
    protocol = protocol or DEFAULT_PROTOCOL
    if protocol not in OtlpConfig.PROTOCOLS:
        raise ConfigError(source, f"must be grpc or http/protobuf, got {protocol!r}")
    return protocol


def _insecure_variable(environ: Mapping[str, str]) -> Optional[bool]:
    text, source = _pick(None, "", environ, "INSECURE")
    if text is None:
        return None
    if text.lower() not in ("true", "false"):
        raise ConfigError(source, f"must be true or false, got {text!r}")
    return text.lower() == "true"


def _endpoint(config: OtlpConfig, environ: Mapping[str, str], protocol: str) -> Tuple[str, bool]:
    """(URL, insecure)."""
    endpoint, source = _pick(config.endpoint, "otlp.endpoint", environ, "ENDPOINT")
    if endpoint is None:
        endpoint = default_endpoint(protocol)
    insecure_variable = _insecure_variable(environ)
    if not _SCHEME.match(endpoint):
        if protocol != "grpc" or source == "otlp.endpoint":
            raise ConfigError(source, f"must be a URL such as {default_endpoint(protocol)}, got {endpoint!r}")
        # The specification's one use of INSECURE: a gRPC endpoint without a scheme; TLS unless it says true.
        scheme = "http" if insecure_variable else "https"
        endpoint = f"{scheme}://{endpoint}"
    url = urlsplit(endpoint)
    try:
        url.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError:
        raise ConfigError(source, f"has no valid port: {endpoint!r}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(source, f"must be an http:// or https:// URL such as {default_endpoint(protocol)}, "
                                  f"got {endpoint!r}")
    if protocol == "http/protobuf":
        if source == "OTEL_EXPORTER_OTLP_ENDPOINT":  # a base URL: the signal path is appended
            endpoint = endpoint.rstrip("/") + HTTP_METRICS_PATH
        elif source == "otlp.endpoint" and url.path in ("", "/"):
            endpoint = endpoint.rstrip("/") + HTTP_METRICS_PATH
    insecure = url.scheme == "http"
    if protocol == "grpc" and config.insecure is not None:
        insecure = config.insecure
    return endpoint, insecure


def _headers(config: OtlpConfig, environ: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    from opentelemetry.util.re import parse_env_headers

    text, source = _pick(config.headers, "otlp.headers", environ, "HEADERS")
    if not text:
        return ()
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(source, f"expected key=value[,key=value...], got {item!r}")
    return tuple(parse_env_headers(text, liberal=True).items())


def _timeout(config: OtlpConfig, environ: Mapping[str, str]) -> Tuple[float, Tuple[str, ...]]:
    """Seconds, and a note when a variable's milliseconds look like seconds."""
    if config.timeout is not None:
        if not 0 < config.timeout < math.inf:
            raise ConfigError("otlp.timeout", "must be a positive number of seconds")
        return float(config.timeout), ()
    text, source = _pick(None, "", environ, "TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT_S, ()
    try:
        milliseconds = float(text)
    except ValueError:
        raise ConfigError(source, f"expected milliseconds (e.g. 10000 for 10 s), got {text!r}") from None
    if not 0 < milliseconds < math.inf:
        raise ConfigError(source, f"must be a positive number of milliseconds, got {text!r}")
    notes: Tuple[str, ...] = ()
    if milliseconds < SECONDS_LIKE_TIMEOUT_MS:
        notes = (f"{source}={text} is {text} ms: OTLP timeouts are milliseconds (the specification; "
                 f"opentelemetry-python reads seconds); for {text} s write {milliseconds * 1000:g}",)
    return milliseconds / 1000.0, notes


def _compression(config: OtlpConfig, environ: Mapping[str, str]) -> str:
    text, source = _pick(config.compression, "otlp.compression", environ, "COMPRESSION")
    compression = (text or "none").lower()
    if compression not in OtlpConfig.COMPRESSIONS:
        raise ConfigError(source, f"must be gzip or none, got {text!r}")
    return compression


def _readable(path: str, source: str) -> str:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(source, f"cannot read {path}: {e.strerror or e}") from None
    return path


def _tls_files(config: OtlpConfig, environ: Mapping[str, str]):
    """(CA file, client key, client certificate), each opened and parsed as TLS will use it."""
    certificate, certificate_source = _pick(config.certificate, "otlp.certificate", environ, "CERTIFICATE")
    key, key_source = _pick(config.client_key, "otlp.client_key", environ, "CLIENT_KEY")
    chain, chain_source = _pick(config.client_certificate, "otlp.client_certificate", environ,
                                "CLIENT_CERTIFICATE")
    if certificate:
        _readable(certificate, certificate_source)
        try:
            ssl.create_default_context(cafile=certificate)
        except ssl.SSLError as e:
            raise ConfigError(certificate_source, f"{certificate} holds no PEM certificate ({e.reason})") from None
    if bool(key) != bool(chain):
        given, missing = (key_source, "CLIENT_CERTIFICATE") if key else (chain_source, "CLIENT_KEY")
        raise ConfigError(given, f"mutual TLS needs both a client key and a client certificate; "
                                 f"set OTEL_EXPORTER_OTLP_{missing} (or otlp.{missing.lower()}) too")
    if key and chain:
        _readable(key, key_source)
        _readable(chain, chain_source)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(chain, key)
        except ssl.SSLError as e:
            raise ConfigError(chain_source, f"{chain} and the key {key} ({key_source}) are not a PEM "
                                            f"certificate and its private key ({e.reason})") from None
    return certificate or None, key or None, chain or None


def resolve_settings(config: OtlpConfig, environ: Mapping[str, str] = os.environ) -> OtlpSettings:
    """Every OTLP setting, validated: the SDK's own environment handling is never involved."""
    protocol = _protocol(config, environ)
    endpoint, insecure = _endpoint(config, environ, protocol)
    timeout, notes = _timeout(config, environ)
    certificate, client_key, client_certificate = _tls_files(config, environ)
    if insecure and (certificate or client_key):
        notes += (f"a certificate or client key is set, but {endpoint} is plaintext, so they are not used "
                  "(TLS needs an https:// endpoint)",)
    return OtlpSettings(endpoint=endpoint, protocol=protocol, headers=_headers(config, environ), timeout=timeout,
                        compression=_compression(config, environ), insecure=insecure, certificate=certificate,
                        client_key=client_key, client_certificate=client_certificate, notes=notes)
