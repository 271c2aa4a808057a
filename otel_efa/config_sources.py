"""Loading the configuration: the YAML file, then ``OTEL_EFA_*`` variables, then flags, merged into one
:class:`~otel_efa.config.Config` and validated.

config.py declares the keys (the schema); this module reads and converts what the three sources say about
them. Bad input is a :class:`~otel_efa.config.ConfigError` naming the key and where it came from.
"""
import os
import stat
import typing
from typing import Any, Dict, List, Mapping, Optional

from otel_efa.config import (
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    KEYS,
    MAX_FILE_BYTES,
    MAX_VALUE_CHARS,
    SECTIONS,
    Config,
    ConfigError,
    env_name,
    quote,
)


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


def load_config(config_file: Optional[str] = None, environ: Mapping[str, str] = os.environ,
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
