"""A simulated node whose instruments carry every kind of series the agent can export, for the tests that
render one Snapshot through the OTel SDK and through the agent's own encoders and compare the two.

What makes it "rich": an ENI id on half of the devices only (so a metric's points have different label
sets), a Slurm job on node metrics, topology attributes with quotes, a backslash and a newline (escaping),
a counter the catalog does not know (registered on the fly), one counter at 2**64-1 (above int64), and a
resource whose keys need sanitizing into label names.
"""
import os
from typing import Dict, Optional

from opentelemetry.sdk.resources import Resource

from otel_efa import catalog
from otel_efa.node.sysfs import SysfsReader
from otel_efa.pipeline.collector import Collector
from otel_efa.pipeline.instruments import EfaInstrumentor

PROFILE = "trn1.32xlarge"  # every catalog counter exists on it
HUGE = 2 ** 64 - 1
ODD_TEXT = 'say "hi"\\ then\nnewline'
RESOURCE = Resource.create({"service.name": "otel-efa", "host.id": "i-0123", "deployment.environment": "t\"est",
                            "k8s-node/name": "n1", "9lives": "cat"})


def assert_rich(samples: Dict[tuple, float]) -> None:
    """Parsed Prometheus samples ({(name, labels): value}) hold what makes the node rich, so that a comparison
    of two pages was not between two poor ones: the counter the catalog does not know, the one at 2**64-1
    and the odd text."""
    assert any(name == "efa_future_bytes_total" for name, _ in samples)
    assert float(HUGE) in samples.values()
    assert any(dict(labels).get("aws_efa_gpus") == ODD_TEXT for _, labels in samples)


class RichNode:
    def __init__(self, simulator, huge: bool = True):
        """``huge=False`` leaves out the counter at 2**64-1 (the SDK's OTLP encoder cannot encode it)."""
        self.simulator = simulator
        self.huge = huge
        first = simulator.devices[0]
        with open(os.path.join(first.path, "ports", "1", "hw_counters", "future_bytes"), "w") as f:
            f.write("77\n")
        names = simulator.device_names
        with_eni = set(names[: len(names) // 2])
        with_info = set(names[1:])

        def device_attributes(device: str) -> Dict[str, str]:
            return {catalog.ATTR_ENI: f"eni-{device}"} if device in with_eni else {}

        def device_info(device: str) -> Optional[Dict[str, str]]:
            if device not in with_info:
                return None
            return {catalog.ATTR_PCI_ADDRESS: f"0000:{device}", catalog.ATTR_GPUS: ODD_TEXT}

        self.now = [0.0]  # the collector's clock moves with the simulated traffic: a second takes a second
        self.collector = Collector(SysfsReader(simulator.root), PROFILE, clock=lambda: self.now[0])
        self.instrumentor = EfaInstrumentor(device_attributes=device_attributes,
                                            node_attributes=lambda: {catalog.ATTR_SLURM_JOB: "12,13"},
                                            device_info=device_info)
        self.interval = None  # the Interval of the last collect()

    def instrument(self, meter_provider) -> None:
        self.instrumentor.instrument(meter_provider)

    def collect(self):
        """Two collections with traffic between them, so rates and the rail gauges have values; the second
        one's Interval is :attr:`interval` (and what the instruments serve)."""
        self.instrumentor.interval(self.collector.collect())
        self.simulator.advance_by(1.0)
        self.now[0] += 1.0
        if self.huge:
            self.simulator.set_value(self.simulator.devices[0].name, "rdma_write_wr_err", HUGE)
        snapshot = self.collector.collect()
        self.interval = self.instrumentor.interval(snapshot)
        return snapshot

    def close(self) -> None:
        self.collector.reader.close()
