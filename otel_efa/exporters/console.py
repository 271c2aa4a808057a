"""A readable per-device table on standard output, once per interval (``make demo``).

The table of ``otel-efa top`` (otel_efa/tools/top/view.py): every column a per-second rate over the
interval, units in the header, at most 80 columns whatever the number of devices. The first interval
has no rate yet and shows ``-``; totals since boot are ``otel-efa snapshot``'s.
"""
import sys
from datetime import datetime, timezone
from typing import List, Optional

from otel_efa.exporters import Exporter, ExporterContext
from otel_efa.node import instance_types
from otel_efa.pipeline.interval import Interval
from otel_efa.pipeline.snapshot import Snapshot
from otel_efa.tools.top.model import TopModel
from otel_efa.tools.top.view import MAX_WIDTH, device_count, instance_type_name, node_line, table_lines


class ConsoleTable:
    """Renders successive Snapshots; keeps the previous one's error totals for the ERR/s column."""

    def __init__(self) -> None:
        self.model = TopModel()
        self._instance_type: Optional[str] = None

    def render(self, snapshot: Snapshot) -> List[str]:
        if snapshot.instance_type != self._instance_type:
            self._instance_type = snapshot.instance_type
            self.model.instance_type = instance_types.lookup(snapshot.instance_type)
        self.model.update(snapshot)
        stamp = datetime.fromtimestamp(snapshot.wall_time, timezone.utc).isoformat(timespec="seconds")
        title = f"{stamp}  {instance_type_name(self.model, snapshot.instance_type)}  {device_count(self.model)}"
        lines = [(title, ""), node_line(self.model)] + table_lines(self.model.sorted_rows())
        return [text[:MAX_WIDTH] for text, _ in lines]


class ConsoleExporter(Exporter):
    name = "console"

    def __init__(self, context: ExporterContext):
        super().__init__(context)
        self.table = ConsoleTable()

    def export(self, interval: Interval) -> None:
        sys.stdout.write("\n".join(self.table.render(interval.snapshot)) + "\n\n")
        sys.stdout.flush()
