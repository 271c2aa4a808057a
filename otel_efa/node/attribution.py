"""Who a device's traffic belongs to: its ENI, the accelerators beside it, the Slurm jobs on the node.

None of this may slow the collection loop: IMDS can be down, squeue can hang on a sick slurmctld.
So an :class:`Attribution` works on its own thread, keeps its answers in immutable dictionaries that
the instrumentor reads without locks, and calls ``on_change`` (the instrumentor's ``forget_attributes``)
when an answer changes. Whatever it does not know yet is simply left out. The topology is the exception:
local and quick, it is placed by the agent loop itself (:meth:`Attribution.place`) from the PCI identity
the sysfs reader read when it discovered each device, so a new device's ``efa_device_info`` is in the
very Interval that first has the device.
"""
import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from otel_efa import catalog
from otel_efa.config import Config
from otel_efa.node.eni import EniResolver, mac_from_link_local
from otel_efa.node.imds import ImdsClient
from otel_efa.node.pci import PciFunction
from otel_efa.node.slurm import SlurmJobs
from otel_efa.node.topology import Accelerator, find_accelerators, info_attributes, topologies
from otel_efa.pipeline.snapshot import Snapshot

log = logging.getLogger(__name__)
_UNPLACED = object()


class Attribution:
    def __init__(self, config: Config, sysfs_root: str, imds: Optional[ImdsClient] = None,
                 eni_first_retry: float = 1.0, eni_max_retry: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.sysfs_root = sysfs_root
        self.tick = min(1.0, config.interval)
        # Our own IMDS client (not thread-safe to share); the resolver does the backing off.
        self.eni = EniResolver(imds or ImdsClient(unreachable_holdoff=0.0), eni_first_retry, eni_max_retry,
                               clock)
        slurm = config.slurm
        self.slurm = SlurmJobs(slurm.node_name, slurm.timeout) if slurm.enabled else None
        self.slurm_cache_seconds = slurm.cache_seconds
        self._clock = clock
        self._macs: Dict[str, str] = {}  # device -> MAC, from its port's gids/0
        self._device_extra: Dict[str, Dict[str, str]] = {}
        self._info: Dict[str, Dict[str, str]] = {}
        self._placed: Dict[str, Optional[PciFunction]] = {}  # device -> the PCI identity it was placed from
        self._accelerators: Optional[List[Accelerator]] = None  # read by start(), for the first placement
        self._jobs: Tuple[str, ...] = ()
        self._jobs_due = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- read by the instrument callbacks (any thread) ---------------------------------------
    def device_attributes(self, device: str) -> Dict[str, str]:
        return self._device_extra.get(device, self.node_attributes())

    def node_attributes(self) -> Dict[str, str]:
        jobs = self._jobs
        return {catalog.ATTR_SLURM_JOB: ",".join(jobs)} if jobs else {}

    def device_info(self, device: str) -> Optional[Dict[str, str]]:
        return self._info.get(device)

    @property
    def job_ids(self) -> Tuple[str, ...]:
        """The Slurm jobs on the node (empty when unknown or attribution is off), for other exporters."""
        return self._jobs

    # --- the work ------------------------------------------------------------------------------
    def refresh(self, snapshot: Optional[Snapshot]) -> bool:
        """One pass: ENI ids still missing, jobs when due. True if anything changed."""
        changed = False
        if snapshot is not None:
            unseen = [device for device in snapshot.devices if device.name not in self._macs]
            if unseen:  # a device's MAC does not change: work it out once
                macs = dict(self._macs)
                for device in unseen:
                    mac = next((m for m in (mac_from_link_local(p.gid0) for p in device.ports if p.gid0) if m),
                               None)
                    if mac:
                        macs[device.name] = mac
                self._macs = macs
            changed = self.eni.resolve(self._macs.values()) or changed
        if self.slurm is not None and self._clock() >= self._jobs_due:
            jobs = self.slurm.query()
            self._jobs_due = self._clock() + self.slurm_cache_seconds
            jobs = jobs or ()
            if jobs != self._jobs:
                log.info("Slurm jobs on %s: %s", self.slurm.node_name, ",".join(jobs) or "none")
                self._jobs = jobs
                changed = True
        if changed:
            self._rebuild_device_attributes()
        return changed

    def place(self, snapshot: Snapshot) -> bool:
        """The topology of the snapshot's devices, worked out again when a device shows up that we have not
        placed, or with another PCI identity (rediscovered); the accelerators are looked up again then. True
        when the device_info attributes changed. Called by the collection loop: PCI identities come with the
        devices (read once at discovery), only the accelerators are read here."""
        placed = self._placed
        if all(placed.get(device.name, _UNPLACED) is device.info.pci for device in snapshot.devices):
            return False
        self._placed = {device.name: device.info.pci for device in snapshot.devices}
        accelerators, self._accelerators = self._accelerators, None  # later placements look again
        found = topologies(self.sysfs_root, {device.name: device.info.pci for device in snapshot.devices},
                           accelerators)
        info = {name: info_attributes(t) for name, t in found.items()}
        if info == self._info:
            return False
        self._info = info
        return True

    def _rebuild_device_attributes(self) -> None:
        extra: Dict[str, Dict[str, str]] = {}
        node = self.node_attributes()
        for device, mac in self._macs.items():
            attributes = dict(node)
            eni = self.eni.eni_of(mac)
            if eni:
                attributes[catalog.ATTR_ENI] = eni
            extra[device] = attributes
        self._device_extra = extra

    # --- the thread ----------------------------------------------------------------------------
    def start(self, latest: Callable[[], Optional[Snapshot]], on_change: Callable[[], None]) -> None:
        """Find the accelerators now (cheap, local: the first collection places the devices beside them at
        once), then work on a thread until :meth:`stop`.

        IMDS and squeue are only ever asked on the thread: neither can delay start-up or collection.
        """
        self._accelerators = find_accelerators(self.sysfs_root)
        self._thread = threading.Thread(target=self._run, args=(latest, on_change), name="otel-efa-attribution",
                                        daemon=True)
        self._thread.start()

    def _run(self, latest: Callable[[], Optional[Snapshot]], on_change: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                if self.refresh(latest()):
                    on_change()
            except Exception:  # attribution is a nicety: never let it take the agent down
                log.exception("attribution failed; retrying")
            self._stop.wait(self.tick)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self.slurm is not None:
            self.slurm.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
