"""The web configuration file of Prometheus exporters, so that :9464 takes node_exporter's file unchanged.

The format is exporter-toolkit's ``--web.config.file`` (docs/web-configuration.md in
prometheus/exporter-toolkit; ``web/tls_config.go`` is the reference for what each key means):
``tls_server_config`` (cert_file/cert, key_file/key, client_ca_file/client_ca, client_auth_type,
min_version, max_version), ``basic_auth_users`` (user -> bcrypt hash) and ``http_server_config``
(``headers``; ``http2`` is accepted and means nothing here: the endpoint speaks HTTP/1.1, which Prometheus
negotiates). Relative paths are relative to the file, keys nobody knows are errors, as in the toolkit.

What Python's ssl module cannot do the way Go's crypto/tls does is refused by name rather than ignored:
``cipher_suites`` and ``curve_preferences`` (Go's names), ``client_allowed_sans``, ``rate_limit``, and the
client-auth types that ask for a certificate without verifying it (RequestClientCert, RequireAnyClientCert).
Every problem is a :class:`ConfigError` on ``prometheus.web_config_file``: one line, exit status 2.

Certificates are read at start-up: restart the agent after renewing them.
"""
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from otel_efa.config import ConfigError

KEY = "prometheus.web_config_file"

_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"": ssl.CERT_NONE, "NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# exporter-toolkit's extraHTTPHeaders: the response headers a user may set, and their allowed values.
_HEADERS: Mapping[str, Tuple[str, ...]] = {
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (), "Content-Security-Policy": (),
}
_TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
             "min_version", "max_version", "prefer_server_cipher_suites")
_REFUSED = {
    "tls_server_config.cipher_suites": "Go cipher suite names; otel-efa uses OpenSSL's defaults for TLS 1.2",
    "tls_server_config.curve_preferences": "otel-efa uses OpenSSL's default curves",
    "tls_server_config.client_allowed_sans": "use client_ca_file with a CA that signs only allowed clients",
    "rate_limit": "not implemented by otel-efa",
}
# $2a$, $2b$ (bcrypt's own) and $2y$ (htpasswd -B), a two-digit cost, 22 characters of salt, 31 of hash.
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


@dataclass(frozen=True)
class WebConfig:
    ssl_context: Optional[ssl.SSLContext] = None  # None: plain HTTP
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash; empty: no basic auth
    headers: List[Tuple[str, str]] = field(default_factory=list)  # added to every response


def load(path: str) -> WebConfig:
    """The file at ``path``, checked completely (certificates loaded, hashes parsed) or a ConfigError."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise _error(path, f"cannot read it: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise _error(path, "not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _error(path, "not valid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _error(path, f"must hold a mapping, not {type(data).__name__}")
    _known(path, data, "", ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"))
    directory = os.path.dirname(os.path.abspath(path))
    return WebConfig(ssl_context=_tls(path, directory, _section(path, data, "tls_server_config")),
                     users=_users(path, data.get("basic_auth_users")),
                     headers=_headers(path, _section(path, data, "http_server_config")))


def _error(path: str, problem: str) -> ConfigError:
    return ConfigError(KEY, f"{path}: {problem}")


def _known(path: str, data: Mapping[str, Any], prefix: str, known) -> None:
    for name in data:
        key = f"{prefix}{name}"
        if key in _REFUSED:
            raise _error(path, f"{key} is not supported ({_REFUSED[key]}); remove it")
        if name not in known:
            raise _error(path, f"unknown key {key!r}")


def _section(path: str, data: Mapping[str, Any], name: str) -> Dict[str, Any]:
    section = data.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise _error(path, f"{name} must be a mapping")
    return section


def _text(path: str, section: Mapping[str, Any], prefix: str, name: str) -> str:
    value = section.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _error(path, f"{prefix}.{name} must be a string")
    return value


def _tls(path: str, directory: str, section: Dict[str, Any]) -> Optional[ssl.SSLContext]:
    prefix = "tls_server_config"
    _known(path, section, prefix + ".", _TLS_KEYS)
    text = {name: _text(path, section, prefix, name) for name in _TLS_KEYS if name != "prefer_server_cipher_suites"}
    if not any(text[k] for k in ("cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file",
                                 "client_auth_type")):
        return None  # no TLS: plain HTTP (basic auth may still be on)
    for inline, file in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
        if text[inline] and text[file]:
            raise _error(path, f"{prefix}: give {inline} or {file}, not both")
    if not (text["cert"] or text["cert_file"]):
        raise _error(path, f"{prefix}: missing one of cert or cert_file")
    if not (text["key"] or text["key_file"]):
        raise _error(path, f"{prefix}: missing one of key or key_file")
    files = {name: os.path.join(directory, text[name]) for name in ("cert_file", "key_file", "client_ca_file")
             if text[name]}
    for name, file in files.items():
        if not os.access(file, os.R_OK):
            raise _error(path, f"{prefix}.{name}: cannot read {file}")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = text[name] or default
        if version not in _TLS_VERSIONS:
            raise _error(path, f"{prefix}.{name}: must be one of {', '.join(_TLS_VERSIONS)}, got {version!r}")
        versions[name] = _TLS_VERSIONS[version]
    if versions["min_version"] > versions["max_version"]:
        raise _error(path, f"{prefix}: min_version is above max_version")
    try:
        context.minimum_version = versions["min_version"]
        context.maximum_version = versions["max_version"]
    except (ValueError, ssl.SSLError) as e:
        raise _error(path, f"{prefix}: this OpenSSL refuses those TLS versions ({e})") from None
    _load_chain(path, context, text, files)

    auth = text["client_auth_type"]
    if auth in _UNVERIFIED_CLIENT_AUTH:
        raise _error(path, f"{prefix}.client_auth_type: {auth} (a certificate nobody verifies) is not supported; "
                           "use RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file")
    if auth not in _CLIENT_AUTH:
        raise _error(path, f"{prefix}.client_auth_type: unknown {auth!r}; choose NoClientCert, "
                           "VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    has_ca = bool(text["client_ca"] or text["client_ca_file"])
    if has_ca and _CLIENT_AUTH[auth] == ssl.CERT_NONE:
        raise _error(path, f"{prefix}: client CA's have been configured without a client_auth_type")
    if _CLIENT_AUTH[auth] != ssl.CERT_NONE:
        if not has_ca:
            raise _error(path, f"{prefix}.client_auth_type: {auth} needs client_ca_file or client_ca")
        try:
            if text["client_ca_file"]:
                context.load_verify_locations(cafile=files["client_ca_file"])
            else:
                context.load_verify_locations(cadata=text["client_ca"])
        except (ssl.SSLError, ValueError) as e:
            which = "client_ca_file" if text["client_ca_file"] else "client_ca"
            raise _error(path, f"{prefix}.{which}: no CA certificate in it ({_reason(e)})") from None
        context.verify_mode = _CLIENT_AUTH[auth]
    return context


def _load_chain(path: str, context: ssl.SSLContext, text: Mapping[str, str], files: Mapping[str, str]) -> None:
    """The server's certificate and key, from files or inline PEM (load_cert_chain reads files only)."""
    import tempfile

    made = []
    try:
        paths = {}
        for inline, file in (("cert", "cert_file"), ("key", "key_file")):
            if text[file]:
                paths[inline] = files[file]
            else:
                handle, name = tempfile.mkstemp(prefix="otel-efa-web-")
                made.append(name)
                with os.fdopen(handle, "w") as f:
                    f.write(text[inline])
                paths[inline] = name
        context.load_cert_chain(paths["cert"], paths["key"])
    except ssl.SSLError as e:
        raise _error(path, f"tls_server_config: the certificate and key do not load as a pair ({_reason(e)})") from None
    finally:
        for name in made:
            os.unlink(name)


def _reason(e: Exception) -> str:
    return getattr(e, "reason", None) or str(e)


def _users(path: str, users: Any) -> Dict[str, bytes]:
    if users is None:
        return {}
    if not isinstance(users, dict):
        raise _error(path, "basic_auth_users must map user names to bcrypt hashes")
    checked = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise _error(path, f"basic_auth_users: {user!r} is not a user name (text without ':')")
        match = _BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
        if match is None or not 4 <= int(match.group(1)) <= 31:
            raise _error(path, f"basic_auth_users.{user}: not a bcrypt hash (htpasswd -nBC 10 '' | tr -d ':\\n' "
                               "makes one)")
        checked[user] = hashed.encode("ascii")
    return checked


def _headers(path: str, section: Dict[str, Any]) -> List[Tuple[str, str]]:
    prefix = "http_server_config"
    _known(path, section, prefix + ".", ("http2", "headers"))
    if "http2" in section and not isinstance(section["http2"], bool):
        raise _error(path, f"{prefix}.http2 must be true or false")
    headers = section.get("headers") or {}
    if not isinstance(headers, dict):
        raise _error(path, f"{prefix}.headers must be a mapping")
    chosen = []
    for name, value in headers.items():
        if name not in _HEADERS:
            raise _error(path, f"{prefix}.headers: {name!r} can not be configured")
        if not isinstance(value, str) or not value.isprintable():
            raise _error(path, f"{prefix}.headers.{name} must be a single-line string")
        if _HEADERS[name] and value not in _HEADERS[name]:
            raise _error(path, f"{prefix}.headers.{name}: expected one of {', '.join(_HEADERS[name])}, got {value!r}")
        if value:
            chosen.append((name, value))
    return chosen
