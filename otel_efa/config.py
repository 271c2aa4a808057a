"""Configuration: one typed object from a YAML file, then ``OTEL_EFA_*`` variables, then flags.

Keys are dotted paths (``interval``, ``prometheus.address``, ``cloudwatch.batch_size``); the environment
variable of a key is ``OTEL_EFA_`` + the key upper-cased with dots as underscores
(``OTEL_EFA_CLOUDWATCH_BATCH_SIZE``). A key nobody knows or a value that does not fit is a
:class:`ConfigError` naming the key; the command line turns it into one line and exit status 2.

This module declares the keys: the sections below, their defaults and checks, and :data:`KEYS`, the table of
every dotted key. Reading and merging the three sources is otel_efa/config_sources.py (:func:`load`).
"""
import dataclasses
import os
import re
import reprlib
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from otel_efa import catalog

DEFAULT_CONFIG_FILE = "/etc/otel-efa/config.yaml"
ENV_PREFIX = "OTEL_EFA_"
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
            from otel_efa.otlp_settings import default_endpoint  # the defaults' one place

            raise ConfigError("otlp.endpoint",
                              f"must be a URL such as {default_endpoint()}, got {quote(self.endpoint)}")
        if self.headers is not None:
            for item in filter(None, (part.strip() for part in self.headers.split(","))):
                if "=" not in item or not item.split("=", 1)[0].strip():
                    raise ConfigError("otlp.headers", f"expected key=value[,key=value...], got {quote(item)}")


@dataclass
class CloudWatchConfig:
    """PutMetricData straight from the node (no collector). Region: this, else AWS_REGION /
    AWS_DEFAULT_REGION, else IMDS. Every dimension set and health event is a priced metric
    (``otel-efa cost``)."""

    namespace: str = catalog.CLOUDWATCH_NAMESPACE  # the quick-start's; must not start with AWS/
    region: Optional[str] = None  # else AWS_REGION / AWS_DEFAULT_REGION, else IMDS; none: exit 2 at start
    batch_size: int = 1  # collection intervals per PutMetricData flush (the quick-start's BATCH_SIZE)
    buffer_minutes: float = 60.0  # data kept across an outage; older data is dropped and counted
    storage_resolution: int = 60  # 60 (standard) or 1 (high resolution, priced the same per metric)
    # instance, device, cluster, job (catalog.CLOUDWATCH_DIMENSION_SETS)
    dimension_sets: List[str] = field(default_factory=lambda: list(catalog.CLOUDWATCH_DEFAULT_DIMENSION_SETS))
    cluster_name: Optional[str] = None  # needed by the "cluster" dimension set
    health_events: bool = False  # also publish the SRD health event counters (node totals)
    retry_mode: str = "standard"  # botocore's standard or adaptive retry mode
    max_attempts: int = 5  # per PutMetricData call, first attempt included

    def validate(self) -> None:
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
        unknown = [d for d in self.dimension_sets if d not in catalog.CLOUDWATCH_DIMENSION_SETS]
        if unknown or not self.dimension_sets:
            raise ConfigError("cloudwatch.dimension_sets",
                              f"choose one or more of {', '.join(catalog.CLOUDWATCH_DIMENSION_SETS)}")
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

    enabled: bool = False  # run squeue and put the running job ids on the metrics
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
    interval: float = 60.0  # seconds between collections (the quick-start's COLLECTION_INTERVAL)
    sysfs: str = "/sys"  # where the kernel's counters are read: /sys, or a copied or simulated tree
    simulate: Optional[str] = None  # an instance profile: run on a simulated node
    # Faults on the simulated node, each KIND[:DEVICE][@SECONDS] (otel_efa/tools/simulator/faults.py), e.g.
    # retransmit-storm:rdmap79s0@60: what alerts and dashboards show when hardware misbehaves.
    simulate_faults: List[str] = field(default_factory=list)
    # Read a counter tree not owned by root or world-writable (a test or copied tree); see otel_efa/node/sysfs_trust.py.
    allow_untrusted_sysfs: bool = False
    instance_type: Optional[str] = None  # overrides what IMDS says (link speed, expected devices)
    # Where the metrics go: any of otlp, prometheus, cloudwatch, log, console, otel-sdk, or an installed
    # plugin's name (an entry point of the group otel_efa.exporters).
    exporters: List[str] = field(default_factory=lambda: ["prometheus", "log"])
    log_file: Optional[str] = None  # where the quick-start's human log line goes; null: standard output
    log_level: str = "info"  # of the agent's own messages on standard error: debug, info, warning, error
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
        from otel_efa.exporters.registry import names as exporter_names

        known = exporter_names()  # the built-ins and any plugin installed (otel_efa/exporters/registry.py)
        if not self.exporters:
            raise ConfigError("exporters", f"must name at least one exporter: {', '.join(known)}")
        unknown = [e for e in self.exporters if e not in known]
        if unknown:
            raise ConfigError("exporters", f"unknown exporter {quote(unknown[0])}; choose from {', '.join(known)}")
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
        if self.simulate_faults:
            from otel_efa.tools.simulator.faults import check_specs
            if self.simulate is None:
                raise ConfigError("simulate_faults", "needs simulate: faults go on a simulated node")
            problem = check_specs(self.simulate, self.simulate_faults)
            if problem:
                raise ConfigError("simulate_faults", problem)
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            validate = getattr(section, "validate", None)
            if dataclasses.is_dataclass(section) and validate is not None:
                validate()
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


def load(config_file: Optional[str] = None, environ: Mapping[str, str] = os.environ,
         flags: Optional[Mapping[str, Any]] = None, check_paths: bool = False) -> Config:
    """File, then environment, then flags (dotted keys; None means not given). Validated; with
    ``check_paths`` (the agent), the sysfs root must also be there. (otel_efa/config_sources.py reads them.)"""
    from otel_efa.config_sources import load_config

    return load_config(config_file, environ, flags, check_paths)


def read_file(path: str) -> Dict[str, Any]:
    """The YAML file's keys, flattened to dotted keys (otel_efa/config_sources.py)."""
    from otel_efa.config_sources import read_file as read

    return read(path)


def __getattr__(name: str) -> Any:
    """``EXPORTERS``: the names of the exporters installed (the registry's, plugins included), looked up
    when asked for rather than on import."""
    if name == "EXPORTERS":
        from otel_efa.exporters.registry import names

        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
