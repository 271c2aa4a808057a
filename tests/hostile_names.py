"""A simulated node whose counter files and device directories carry every kind of hostile name.

Names are bytes (``os.fsencode`` paths), so a byte that is not UTF-8 reaches the agent exactly as the
kernel would give it. Values are fixed per (device, counter), so a test can find each one where it lands.
"""
import os
from typing import Dict, Tuple

from otel_efa.tools.simulator import Simulator

PROFILE = "p4d.24xlarge"

# kernel name -> value on every port (the value tells the counters apart wherever they land)
PORT_COUNTERS: Dict[bytes, int] = {
    b"foo{bar}": 1011, b"sp ace": 1012, b'qu"ote': 1013, b"new-counter.x": 1014, "ünï".encode(): 1015,
    b"bad\xffbyte": 1016, b"rx-dropped": 1017, b"port_up": 1018, b"new\nline": 1019, b"RX_bytes": 1020,
    b"a.b": 1021, b"a_b": 1022, b"back\\slash": 1023, b"9lives": 1024, b"x" * 255: 1025,
}
DEVICE_COUNTERS: Dict[bytes, int] = {b"weird name": 2031, b"x\xfe": 2032, b"cmds-err": 2033}

# index of the simulator's device -> the name it is renamed to
DEVICE_NAMES: Dict[int, bytes] = {1: b"rdmap\xff0s6", 2: b'dev"q\\uote\nx', 3: "ünï".encode()}


def hostile_node(root: str) -> Tuple[Simulator, Dict[str, str]]:
    """The simulator's tree with the hostile names added; (simulator, {device as the agent sees it:
    the simulator's name for it})."""
    sim = Simulator(PROFILE, root)
    devices: Dict[str, str] = {}
    for index, device in enumerate(sim.devices):
        for name, value in PORT_COUNTERS.items():
            _write(os.fsencode(device.port_dir), name, value)
        for name, value in DEVICE_COUNTERS.items():
            _write(os.fsencode(device.device_counter_dir), name, value)
        path = os.fsencode(device.path)
        if index in DEVICE_NAMES:
            new = os.path.join(os.path.dirname(path), DEVICE_NAMES[index])
            os.rename(path, new)
            path = new
        devices[os.fsdecode(os.path.basename(path))] = device.name
    return sim, devices


def _write(directory: bytes, name: bytes, value: int) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(b"%d\n" % value)
