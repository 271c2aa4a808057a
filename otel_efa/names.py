"""How any counter or device name the kernel gives reaches every exporter intact and valid.

A sysfs file or directory name is any bytes but ``/`` and NUL; Python hands them to us as ``str``, with
bytes that are not UTF-8 as lone surrogates (``os.listdir``/``os.fsdecode``, the ``surrogateescape``
handler). Each destination has stricter rules, and one bad name must never cost the rest of the node:

* **Text** (every attribute value, description and log line; OTLP strings must be UTF-8 or protobuf
  refuses the whole request): :func:`escape` writes a byte that is not UTF-8, or an ASCII control
  character, as ``\\xNN`` (lower-case hex) and a backslash as ``\\\\``; everything else is kept.
  The same text goes to OTLP, Prometheus, the log line and the console, and :func:`unescape` gives the
  original name back, so nothing is lost. CloudWatch dimension values must be printable ASCII
  (PutMetricData), so :func:`cloudwatch_value` also writes every byte of a non-ASCII character as
  ``\\xNN``: a value readable with the same :func:`unescape` (a file name has at most 255 bytes, so
  it fits CloudWatch's 1024 characters; a longer text is cut, with ``_`` and :func:`stable_suffix`).
* **OTel instrument names** (the API's syntax ``^[A-Za-z][A-Za-z0-9_./-]{0,254}$``; the SDK refuses any
  other name, and an exception at instrument creation used to stop the agent): :func:`instrument_name`
  keeps a valid name as it is (``efa_new-counter.x``). Any other name becomes the name with each
  character outside that set replaced by ``_`` (runs of ``_`` collapsed; a leading ``x_`` if it would not
  start with a letter), cut to fit 255 characters with ``_`` and :func:`stable_suffix` (8 hex digits of
  the SHA-256 of the escaped original) appended: ``efa_foo{bar}`` -> ``efa_foo_bar_7b79d59e``.
  The suffix depends on the name alone, so every node and every restart gives the same name whatever
  other counters exist, and no valid name can be taken by a mapped one.
* **Prometheus** names: :func:`prometheus_metric_name` and :func:`prometheus_label_name` are the rules of
  opentelemetry-exporter-prometheus (``_mapping.py``: each run of characters outside ``[a-zA-Z0-9:]``,
  resp. ``[a-zA-Z0-9]`` for labels, becomes one ``_``; a leading digit becomes ``_``).

Names that still collide (two kernel names, or a kernel name and a catalog name, equal after mapping)
are told apart by :class:`UniqueNames`: the first claim keeps the name, a later one gets
``_<stable_suffix>``, and the exporters log the rename once.
"""
import hashlib
import re
from typing import Callable, Iterable, Set

INSTRUMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_./\-]{0,254}")
MAX_INSTRUMENT_NAME = 255
MAX_CLOUDWATCH_VALUE = 1024
_NOT_INSTRUMENT_CHARACTERS = re.compile(r"[^A-Za-z0-9_./\-]+")
_UNDERSCORES = re.compile(r"__+")
_ESCAPES = re.compile(r"\\(?:\\|x[0-9a-f]{2}|u[0-9a-f]{4})")
# opentelemetry-exporter-prometheus 0.66, opentelemetry/exporter/prometheus/_mapping.py
_PROMETHEUS_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_PROMETHEUS_LABEL = re.compile(r"[^a-zA-Z0-9]+")


def _escape_character(character: str) -> str:
    code = ord(character)
    if character == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate cannot be UTF-8 either
        return f"\\u{code:04x}"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    return character


_NEEDS_ESCAPE = re.compile("[\\\\\x00-\x1f\x7f\ud800-\udfff]")


def escape(name: str) -> str:
    """``name`` as valid, printable UTF-8 text, reversibly (see the module docstring)."""
    if _NEEDS_ESCAPE.search(name) is None:  # the usual case: nothing to do
        return name
    return "".join(map(_escape_character, name))


def unescape(text: str) -> str:
    """The original name (bytes that are not UTF-8 as surrogates again) from :func:`escape` or
    :func:`cloudwatch_value`."""
    out = []
    pending = bytearray()  # \xNN bytes in a row decode together: \xc3\xa9 is "é", \xff a surrogate
    position = 0
    for match in _ESCAPES.finditer(text):
        token = match.group()
        if match.start() > position or token[1] != "x":
            out.append(pending.decode("utf-8", "surrogateescape"))
            pending.clear()
            out.append(text[position:match.start()])
        if token[1] == "x":
            pending.append(int(token[2:], 16))
        else:
            out.append("\\" if token == "\\\\" else chr(int(token[2:], 16)))
        position = match.end()
    out.append(pending.decode("utf-8", "surrogateescape"))
    out.append(text[position:])
    return "".join(out)


def cloudwatch_value(name: str) -> str:
    """A CloudWatch dimension value: printable ASCII with at least one non-space character."""
    text = escape(name)
    if not text.isascii():
        text = "".join(c if c.isascii() else "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass"))
                       for c in text)
    if not text.strip():
        text = "".join(f"\\x{ord(c):02x}" for c in text) or "\\x"
    if len(text) > MAX_CLOUDWATCH_VALUE:  # only a name longer than any file name can be
        text = text[:MAX_CLOUDWATCH_VALUE - 9] + "_" + stable_suffix(name)
    return text


def stable_suffix(name: str) -> str:
    """8 hex digits that depend on ``name`` alone: the same on every node and after every restart."""
    return hashlib.sha256(escape(name).encode("utf-8")).hexdigest()[:8]


def is_instrument_name(name: str) -> bool:
    return INSTRUMENT_NAME.fullmatch(name) is not None


def instrument_name(name: str) -> str:
    """A valid OTel instrument name: ``name`` itself when valid, else its mapping (module docstring)."""
    if is_instrument_name(name):
        return name
    base = _UNDERSCORES.sub("_", _NOT_INSTRUMENT_CHARACTERS.sub("_", name))
    if not base[:1].isascii() or not base[:1].isalpha():
        base = "x_" + base
    suffix = "_" + stable_suffix(name)
    return base[:MAX_INSTRUMENT_NAME - len(suffix)].rstrip("_") + suffix


def prometheus_metric_name(name: str) -> str:
    """opentelemetry-exporter-prometheus's ``sanitize_full_name``."""
    if name[:1].isdigit():
        name = "_" + name[1:]
    return _PROMETHEUS_NAME.sub("_", name)


def prometheus_label_name(key: str) -> str:
    """opentelemetry-exporter-prometheus's ``sanitize_attribute`` (an empty key becomes ``_``)."""
    if key[:1].isdigit():
        key = "_" + key[1:]
    return _PROMETHEUS_LABEL.sub("_", key) or "_"


class UniqueNames:
    """Names handed out so far; a name claimed again comes back with a stable suffix.

    ``fold`` says which names count as equal: ``str.lower`` for OTel instrument names (the API treats
    them case-insensitively, and the SDK would merge ``efa_RX_bytes`` into ``efa_rx_bytes``).
    ``taken`` lists further strings a name must not equal (for Prometheus: a counter's family name).
    """

    def __init__(self, fold: Callable[[str], str] = str, reserved: Iterable[str] = ()):
        self._fold = fold
        self._claimed: Set[str] = {fold(n) for n in reserved}

    def claim(self, name: str, build: Callable[[str], str] = lambda base: base,
              also: Callable[[str], Iterable[str]] = lambda n: (n,), limit: int = 0, key: str = "") -> str:
        """Claim ``build(name)``; when it, or any of ``also(result)``, is taken, ``build(name_<suffix>)``
        with the :func:`stable_suffix` of ``key`` (default ``name``), ``name`` cut so that the result
        stays within ``limit`` characters when given. Returns the name claimed."""
        key = key or name
        candidate = build(name)
        attempt = 0
        while any(self._fold(n) in self._claimed for n in also(candidate)):
            attempt += 1
            suffix = "_" + stable_suffix(key if attempt == 1 else f"{key}#{attempt}")
            base = name[:limit - len(suffix)].rstrip("_") if limit else name
            candidate = build(base + suffix)
        self._claimed.update(self._fold(n) for n in also(candidate))
        return candidate
