"""Which exporters exist: the entry points of the group ``otel_efa.exporters``, the built-ins' included.

otel-efa declares its own exporters in pyproject.toml (``[project.entry-points."otel_efa.exporters"]``);
any installed distribution can add one the same way::

    [project.entry-points."otel_efa.exporters"]
    kafka = "otel_efa_kafka:KafkaExporter"

The object named is called with an :class:`~otel_efa.exporters.ExporterContext` and returns an
:class:`~otel_efa.exporters.Exporter`. ``exporters: [prometheus, kafka]`` then chooses it; a module is
imported only when its exporter is chosen. A name is otel-efa's own if it declares it (a plugin cannot
replace a built-in); between two plugins, the distribution found first on ``sys.path`` keeps it.

Nothing here imports the config: config.py asks :func:`names` to validate ``exporters``.
"""
import dataclasses
import functools
import importlib.metadata
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Tuple

if TYPE_CHECKING:
    from otel_efa.exporters import Exporter, ExporterContext

log = logging.getLogger(__name__)

GROUP = "otel_efa.exporters"
OWN_DISTRIBUTION = "otel-efa"


@dataclass(frozen=True)
class Registered:
    name: str  # what ``exporters`` lists
    target: str  # "module:attribute"
    distribution: str  # "name version" of the distribution that declares it
    entry_point: Any  # importlib.metadata.EntryPoint

    @property
    def builtin(self) -> bool:
        return self.distribution.split(" ")[0] == OWN_DISTRIBUTION


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _declared() -> Tuple[Registered, ...]:
    """Every entry point of GROUP, once per distribution (the first of a name on sys.path).

    From Python 3.10, ``entry_points(group=...)`` does exactly that and names each point's distribution,
    whose metadata is then parsed for the few that declare one (parsing every installed distribution's
    METADATA cost about 80 ms of each agent start). Python 3.9 has neither: there every distribution's name
    is read (``Distribution.entry_points`` is a list on 3.9, iterable like the later ``EntryPoints``).
    """
    if sys.version_info >= (3, 10):
        found = []
        for entry_point in importlib.metadata.entry_points(group=GROUP):
            dist = entry_point.dist
            label = f"{dist.metadata['Name'] or '?'} {dist.version}" if dist is not None else "?"
            found.append(Registered(entry_point.name, entry_point.value, label, entry_point))
        return tuple(found)
    found = []
    seen = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        if _normalized(dist_name) in seen:
            continue  # the same distribution again further down sys.path: the first one is the one imported
        seen.add(_normalized(dist_name))
        for entry_point in dist.entry_points:
            if entry_point.group == GROUP:
                found.append(Registered(entry_point.name, entry_point.value, f"{dist_name} {dist.version}",
                                        entry_point))
    return tuple(found)


@functools.cache
def registered() -> Dict[str, Registered]:
    """Name -> its entry point: otel-efa's own first, then the plugins', each in name order. Read once per
    process (``registered.cache_clear()`` reads again)."""
    declared = _declared()
    own = sorted((r for r in declared if r.builtin), key=lambda r: r.name)
    plugins = sorted((r for r in declared if not r.builtin), key=lambda r: (r.name, r.distribution))
    chosen: Dict[str, Registered] = {}
    for entry in own + plugins:
        kept = chosen.get(entry.name)
        if kept is None:
            chosen[entry.name] = entry
        elif kept.target != entry.target:
            log.warning("exporter %r of %s is ignored: %s declares that name already", entry.name,
                        entry.distribution, kept.distribution)
    if not own:
        log.warning("no built-in exporters are registered: otel-efa's package metadata predates its entry "
                    "points (reinstall it: pip install -e . in a checkout)")
    return chosen


def names() -> Tuple[str, ...]:
    return tuple(registered())


def create(name: str, context: "ExporterContext") -> "Exporter":
    """The exporter ``name`` made with ``context`` (its ``log`` the logger of the exporter's module).

    One that cannot be imported or made is a ConfigError on ``exporters``: one line naming the exporter,
    where it comes from and why (exit status 2); the traceback is logged at debug level. A ConfigError the
    exporter raises itself, naming its own key, passes unchanged.
    """
    from otel_efa.config import ConfigError

    entry = registered().get(name)
    if entry is None:
        raise ConfigError("exporters", f"unknown exporter {name!r}; choose from {', '.join(names())}")
    context = dataclasses.replace(context, log=logging.getLogger(entry.target.partition(":")[0].strip()))
    try:
        factory = entry.entry_point.load()
    except Exception as e:
        log.debug("importing the %s exporter failed", name, exc_info=True)
        raise ConfigError("exporters", f"the {name} exporter ({entry.target} from {entry.distribution}) cannot be "
                                f"imported: {type(e).__name__}: {e}") from None
    try:
        return factory(context)
    except ConfigError:
        raise
    except Exception as e:
        log.debug("making the %s exporter failed", name, exc_info=True)
        raise ConfigError("exporters", f"the {name} exporter ({entry.target} from {entry.distribution}) failed to "
                                f"start: {type(e).__name__}: {e}") from None
