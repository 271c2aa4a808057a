"""Configuration: one typed object from a YAML file, then ``OTEL_EFA_*`` variables, then flags.

Keys are dotted paths (``interval``, ``prometheus.address``, ``cloudwatch.batch_size``); the environment
variable of a key is ``OTEL_EFA_`` + the key upper-cased with dots as underscores
(``OTEL_EFA_CLOUDWATCH_BATCH_SIZE``). A key nobody knows or a value that does not fit is a
:class:`ConfigError` naming the key; the command line turns it into one line and exit status 2.
"""
import dataclasses
import os
import re
import reprlib
import stat
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

DEFAULT_CONFIG_FILE = "/etc/otel-efa/config.yaml"
ENV_PREFIX = "OTEL_EFA_"
EXPORTERS = ("otlp", "prometheus", "cloudwatch", "log", "console", "otel-sdk")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_FILE_BYTES = 1024 * 1024  # a config is a few hundred bytes; this refuses /dev/zero's kin and 10 MB values
MAX_VALUE_CHARS = 4096  # a path, a URL, a header list: longer is a mistake (or an attack), refused
QUOTE_CHARS = 80  # what an error quotes of a value or a key, at most
MAX_INTERVAL_S = 24 * 3600.0  # a collection interval longer than a day is a typo (and overflows timers)
INSTRUMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_./-]{0,254}\Z")  # the OTel API's syntax
INSTRUMENT_PATTERN = re.compile(r"[A-Za-z*?][A-Za-z0-9_./*?-]{0,254}\Z")  # with an SDK View's wildcards


def quote(value: Any) -> str:
    """repr(value) cut to QUOTE_CHARS: an error names the value without echoing megabytes of it.

    reprlib bounds the work too, so a deeply shared structure is never expanded whole."""
    shortened = reprlib.Repr()
    shortened.maxstring = shortened.maxother = shortened.maxlong = QUOTE_CHARS
    text = shortened.repr(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS - 3] + "..."


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped, as repr() would: an error
    is one line however odd the key, value or path it quotes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    def __init__(self, key: str, problem: str, source: str = ""):
        self.key = key
        self.problem = problem
        self.source = source
        where = f" (from {_cut(source, 4 * QUOTE_CHARS)})" if source else ""
        super().__init__(one_line(f"config error: {_cut(key, QUOTE_CHARS)}: {_cut(problem, 1024)}{where}"))


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 3] + "..."


def parse_host_port(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {quote(value)}")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class PrometheusConfig:
    address: str = "0.0.0.0:9464"  # answers anyone who can reach it: see web_config_file, or bind 127.0.0.1
    # TLS and basic auth, in the format of exporter-toolkit's --web.config.file (node_exporter's file works);
    # read and checked when the agent starts (otel_efa/exporters/web_config.py)
    web_config_file: Optional[str] = None

    def validate(self) -> None:
        try:
            parse_host_port(self.address)
        except ValueError as e:
            raise ConfigError("prometheus.address", str(e)) from None
        if self.web_config_file is not None and not self.web_config_file.strip():
            raise ConfigError("prometheus.web_config_file", "must not be empty")


@dataclass
class OtlpConfig:
    """OTLP to the collector. An unset key falls back to the standard variable (the ``METRICS`` one
    first, e.g. ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``, then ``OTEL_EXPORTER_OTLP_ENDPOINT``), then to the
    ADOT collector on this node: gRPC to 127.0.0.1:4317, or http/protobuf to 127.0.0.1:4318/v1/metrics.
    otel_efa/otlp_settings.py resolves them (the exporter, the doctor and the collector configs use it).
    """

    PROTOCOLS = ("grpc", "http/protobuf")  # class constants, not keys
    COMPRESSIONS = ("gzip", "none")

    endpoint: Optional[str] = None  # URL; for http/protobuf a URL without a path gets /v1/metrics
    protocol: Optional[str] = None  # grpc | http/protobuf
    headers: Optional[str] = None  # key=value,key2=value2 (OTEL_EXPORTER_OTLP_HEADERS syntax)
    timeout: Optional[float] = None  # seconds per export, retries included (default 10)
    compression: Optional[str] = None  # gzip | none
    insecure: Optional[bool] = None  # gRPC without TLS; default: true unless the endpoint is https://
    certificate: Optional[str] = None  # CA file (PEM) that verifies the collector; default: the system's
    client_key: Optional[str] = None  # mutual TLS: this agent's private key (PEM), with client_certificate
    client_certificate: Optional[str] = None  # mutual TLS: this agent's certificate (PEM)

    def validate(self) -> None:
        if self.protocol not in (None,) + self.PROTOCOLS:
            raise ConfigError("otlp.protocol", f"must be grpc or http/protobuf, got {quote(self.protocol)}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError("otlp.timeout", "must be a positive number of seconds")
        if self.compression not in (None,) + self.COMPRESSIONS:
            raise ConfigError("otlp.compression", f"must be gzip or none, got {quote(self.compression)}")
        if self.endpoint is not None and "://" not in self.endpoint:
            raise ConfigError("otlp.endpoint",
                              f"must be a URL such as http://127.0.0.1:4317, got {quote(self.endpoint)}")
        if self.headers is not None:
            for item in filter(None, (part.strip() for part in self.headers.split(","))):
                if "=" not in item or not item.split("=", 1)[0].strip():
                    raise ConfigError("otlp.headers", f"expected key=value[,key=value...], got {quote(item)}")


@dataclass
class CloudWatchConfig:
    """PutMetricData straight from the node (no collector). Region: this, else AWS_REGION /
    AWS_DEFAULT_REGION, else IMDS. Every dimension set and health event is a priced metric
    (``otel-efa cost``)."""

    namespace: str = "ParallelCluster/Network"
    region: Optional[str] = None
    batch_size: int = 1  # collection intervals per PutMetricData flush (the seed's BATCH_SIZE)
    buffer_minutes: float = 60.0  # data kept across an outage; older data is dropped and counted
    storage_resolution: int = 60  # 60 (standard) or 1 (high resolution, priced the same per metric)
    dimension_sets: List[str] = field(default_factory=lambda: ["instance"])  # instance, device, cluster, job
    cluster_name: Optional[str] = None  # needed by the "cluster" dimension set
    health_events: bool = False  # also publish the SRD health event counters (node totals)
    retry_mode: str = "standard"  # botocore's standard or adaptive retry mode
    max_attempts: int = 5  # per PutMetricData call, first attempt included

    def validate(self) -> None:
        from otel_efa.catalog import CLOUDWATCH_DIMENSION_SETS

        if not self.namespace:
            raise ConfigError("cloudwatch.namespace", "must not be empty")
        if self.namespace.startswith("AWS/"):
            raise ConfigError("cloudwatch.namespace", "must not start with AWS/ (reserved for AWS services)")
        if self.batch_size < 1:
            raise ConfigError("cloudwatch.batch_size", "must be at least 1")
        if not 0 < self.buffer_minutes <= 14 * 24 * 60:
            raise ConfigError("cloudwatch.buffer_minutes",
                              "must be above 0 and at most 20160 (CloudWatch refuses data older than 2 weeks)")
        if self.storage_resolution not in (1, 60):
            raise ConfigError("cloudwatch.storage_resolution", "must be 1 or 60")
        unknown = [d for d in self.dimension_sets if d not in CLOUDWATCH_DIMENSION_SETS]
        if unknown or not self.dimension_sets:
            raise ConfigError("cloudwatch.dimension_sets",
                              f"choose one or more of {', '.join(CLOUDWATCH_DIMENSION_SETS)}")
        if "cluster" in self.dimension_sets and not self.cluster_name:
            raise ConfigError("cloudwatch.cluster_name", "needed by dimension set 'cluster'")
        if self.retry_mode not in ("standard", "adaptive"):
            raise ConfigError("cloudwatch.retry_mode", "must be standard or adaptive")
        if self.max_attempts < 1:
            raise ConfigError("cloudwatch.max_attempts", "must be at least 1")


@dataclass
class SlurmConfig:
    """Job attribution, off by default: the Slurm job ids running on the node as ``slurm.job.id``.

    On OTLP and Prometheus only, unless ``cloudwatch.dimension_sets`` asks for ``job``: every job then
    makes new CloudWatch metrics, which ``otel-efa cost`` prices.
    """

    enabled: bool = False
    timeout: float = 2.0  # seconds one squeue run may take before it is killed
    cache_seconds: float = 30.0  # job ids are reused this long before squeue runs again
    node_name: Optional[str] = None  # Slurm's name for this node; default the short hostname

    def validate(self) -> None:
        if not self.timeout > 0:
            raise ConfigError("slurm.timeout", "must be a positive number of seconds")
        if not self.cache_seconds > 0:
            raise ConfigError("slurm.cache_seconds", "must be a positive number of seconds")
        if self.node_name is not None and not self.node_name.strip():
            raise ConfigError("slurm.node_name", "must not be empty")


@dataclass
class SdkConfig:
    """Views of the ``otel-sdk`` exporter's MeterProvider (otel_efa/exporters/otel_sdk.py), on that path only."""

    drop_metrics: List[str] = field(default_factory=list)  # instrument names, * and ? allowed: not exported
    rename_metrics: List[str] = field(default_factory=list)  # old=new: instrument old exported as new

    def validate(self) -> None:
        bad = [p for p in self.drop_metrics if not INSTRUMENT_PATTERN.match(p)]
        if bad:
            raise ConfigError("sdk.drop_metrics", f"expected instrument names (wildcards * and ?), got {quote(bad[0])}")
        olds = [pair.partition("=")[0].strip().lower() for pair in self.rename_metrics]
        for pair in self.rename_metrics:
            old, sep, new = (part.strip() for part in pair.partition("="))
            names = INSTRUMENT_NAME.match(old) and INSTRUMENT_NAME.match(new)
            if not sep or not names or olds.count(old.lower()) > 1:
                raise ConfigError("sdk.rename_metrics", f"expected old=new (instrument names, each old once), "
                                                        f"got {quote(pair)}")


@dataclass
class Config:
    interval: float = 60.0  # seconds between collections (the seed's COLLECTION_INTERVAL)
    sysfs: str = "/sys"
    simulate: Optional[str] = None  # an instance profile: run on a simulated node
    # Read a counter tree not owned by root or world-writable (a test or copied tree); see sysfs_trust.py.
    allow_untrusted_sysfs: bool = False
    instance_type: Optional[str] = None  # overrides what IMDS says (link speed, expected devices)
    exporters: List[str] = field(default_factory=lambda: ["prometheus", "log"])
    log_file: Optional[str] = None  # the seed's human log line; None: standard output
    log_level: str = "info"
    count: Optional[int] = None  # stop after this many collections (tests, one-shot runs)
    # The ParallelCluster cluster this node belongs to (OTEL_EFA_CLUSTER_NAME, which the node installer
    # writes): the resource attribute aws.parallelcluster.cluster_name, and CloudWatch's ClusterName
    # dimension unless cloudwatch.cluster_name names another.
    cluster_name: Optional[str] = None
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    cloudwatch: CloudWatchConfig = field(default_factory=CloudWatchConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    sdk: SdkConfig = field(default_factory=SdkConfig)

    def validate(self) -> None:
        if not 0 < self.interval <= MAX_INTERVAL_S:
            raise ConfigError("interval", f"must be above 0 and at most {MAX_INTERVAL_S:.0f} seconds (a day)")
        if not self.exporters:
            raise ConfigError("exporters", f"must name at least one exporter: {', '.join(EXPORTERS)}")
        unknown = [e for e in self.exporters if e not in EXPORTERS]
        if unknown:
            raise ConfigError("exporters", f"unknown exporter {quote(unknown[0])}; choose from {', '.join(EXPORTERS)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        if self.count is not None and self.count < 1:
            raise ConfigError("count", "must be at least 1")
        if self.simulate is not None:
            from otel_efa.node.instance_types import INSTANCE_TYPES
            if self.simulate not in INSTANCE_TYPES:
                raise ConfigError("simulate", f"unknown profile {quote(self.simulate)}; choose from "
                                  f"{', '.join(INSTANCE_TYPES)}")
            if self.sysfs != Config.sysfs:
                raise ConfigError("simulate", "cannot be used with sysfs (a simulated node writes its own tree)")
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate()
        if self.cluster_name is not None and not self.cluster_name.strip():
            raise ConfigError("cluster_name", "must not be empty")
        if "job" in self.cloudwatch.dimension_sets and not self.slurm.enabled:
            raise ConfigError("cloudwatch.dimension_sets", "dimension set 'job' needs slurm.enabled: true")


def _sections(cls=Config, prefix: str = "") -> Dict[str, Tuple[type, str]]:
    """Every settable dotted key -> (its type, attribute name)."""
    keys = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys.update(_sections(hint, f"{prefix}{f.name}."))
        else:
            keys[prefix + f.name] = (hint, f.name)
    return keys


KEYS = _sections()
SECTIONS = frozenset(key.rsplit(".", 1)[0] for key in KEYS if "." in key)


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "_")


def _convert(key: str, hint: Any, value: Any, source: str) -> Any:
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    if optional:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if typing.get_origin(hint) in (list, List):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError(f"expected a list of names, got {quote(value)}")
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {quote(value)}")
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected a whole number, got {quote(value)}")
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {quote(value)}")
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(f"expected a finite number, got {quote(value)}")
            return number
        if hint is str:
            if isinstance(value, (dict, list, set, bytes)) or "\x00" in str(value):
                raise ValueError(f"expected text, got {quote(value)}")
            return str(value)
    except (TypeError, ValueError, OverflowError) as e:
        message = str(e) if "expected" in str(e) else f"expected {hint.__name__}, got {quote(value)}"
        raise ConfigError(key, message, source) from None
    raise ConfigError(key, f"unsupported type {hint!r}", source)


def _set(config: Config, key: str, value: Any, source: str) -> None:
    if key not in KEYS:
        raise ConfigError(key, "unknown key", source)
    hint, attribute = KEYS[key]
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise ConfigError(key, f"the value is {len(value)} characters long; at most {MAX_VALUE_CHARS}", source)
    target = config
    for part in key.split(".")[:-1]:
        target = getattr(target, part)
    setattr(target, attribute, _convert(key, hint, value, source))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key in SECTIONS:
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _read_bytes(path: str) -> bytes:
    """The file's bytes, refusing what is no regular file before reading it: opened non-blocking, so a FIFO
    nobody writes to cannot hang the agent, and read up to MAX_FILE_BYTES (/dev/zero never ends).
    os.devnull is the empty file: ``cost`` and ``dashboard cloudwatch`` pass it to price the defaults."""
    if path == os.devnull:
        return b""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError("--config", f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError("--config", f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _loader():
    """PyYAML's SafeLoader without aliases: a config has no use for them, and nested aliases (the billion
    laughs) make a value that is small in the file and enormous wherever it is used or quoted."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.events.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError("--config", f"{self.name} uses a YAML alias at line {mark.line + 1}; "
                                  "aliases are not supported")
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_file(path: str) -> Dict[str, Any]:
    import yaml  # only needed when there is a file

    raw = _read_bytes(path)
    try:
        loader = _loader()(raw.decode("utf-8"))
        loader.name = path
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("--config", f"{path} is not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{path} is not UTF-8 text") from None
    except ValueError as e:  # from PyYAML's constructors: a date such as 2001-13-45, an int of 5000 digits
        problem = str(e).split(";")[0]  # not Python's advice to raise its digit limit
        raise ConfigError("--config", f"{path} is not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError("--config", f"{path} nests deeper than YAML can read") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of keys, not {type(data).__name__}")
    return _flatten(data)


def load(config_file: Optional[str] = None, environ: Mapping[str, str] = os.environ,
         flags: Optional[Mapping[str, Any]] = None, check_paths: bool = False) -> Config:
    """File, then environment, then flags (dotted keys; None means not given). Validated; with
    ``check_paths`` (the agent), the sysfs root must also be there."""
    config = Config()
    path = config_file
    if path is None and os.path.exists(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        for key, value in read_file(path).items():
            _set(config, key, value, path)
    known_env = {env_name(k): k for k in KEYS}
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX):
            if name not in known_env:
                raise ConfigError(name, "unknown environment variable", "environment")
            _set(config, known_env[name], environ[name], name)
    for key, value in (flags or {}).items():
        if value is not None:
            _set(config, key, value, "command line")
    if config.cloudwatch.cluster_name is None:
        config.cloudwatch.cluster_name = config.cluster_name
    try:
        config.validate()
        if check_paths:
            _check_sysfs_root(config)
    except ConfigError as e:
        if not e.source:
            raise ConfigError(e.key, e.problem, _source_of(e.key, path, environ, flags)) from None
        raise
    return config


def _check_sysfs_root(config: Config) -> None:
    """A missing root would read as a node without EFA devices, and the agent would export nothing, quietly."""
    if config.simulate is None and not os.path.isdir(config.sysfs):
        problem = "is not a directory" if os.path.exists(config.sysfs) else "does not exist"
        raise ConfigError("sysfs", f"the sysfs root {config.sysfs} {problem}")


def _source_of(key: str, path: Optional[str], environ: Mapping[str, str], flags) -> str:
    if flags and flags.get(key) is not None:
        return "command line"
    if env_name(key) in environ:
        return env_name(key)
    return path or "defaults"
