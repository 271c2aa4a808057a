"""Which RDMA devices under ``/sys/class/infiniband`` are EFA devices.

The class directory lists every RDMA device: beside the EFA devices a node can carry a Mellanox HCA
(``mlx5_0``, PCI vendor 0x15b3), an Intel E810 (``irdma0``), a soft-RoCE device (``rxe0``)... Counting
those as EFA would export their counters under EFA names and, worse, hide a missing EFA device from the
EfaDevicesMissing alert (the number of devices would still add up). So a device is EFA when its PCI
function is Amazon's (``device/vendor`` 0x1d0f, linux ``drivers/infiniband/hw/efa/efa_main.c``
``efa_pci_tbl``); with no readable PCI function, when its driver is ``efa`` or its name is one EFA gets:
the kernel's ``efa_N`` or rdma-core's udev name by PCI address, ``rdmap<bus>s<slot>[f<fn>]``.
"""
import os
import re
from typing import Optional, Tuple

from otel_efa.node.pci import PciFunction

AMAZON_VENDOR = "0x1d0f"
EFA_DRIVER = "efa"
_PCI_VENDOR = re.compile(r"^0x[0-9a-f]{4}$")
_EFA_NAME = re.compile(r"^(efa_[0-9]+|rdmap[0-9]+s[0-9]+(f[0-9]+)?)$")


def classify(device_path: str, function: Optional[PciFunction]) -> Tuple[bool, str]:
    """(is EFA, why) for ``<root>/class/infiniband/<name>`` and the PCI function behind it, as
    ``pci.function_of`` read it (None without a PCI link); never raises, never blocks."""
    name = os.path.basename(device_path)
    vendor = function.vendor.lower() if function is not None else ""
    if _PCI_VENDOR.match(vendor):  # garbage there says nothing: fall back on the driver and the name
        return vendor == AMAZON_VENDOR, f"PCI vendor {vendor}"
    driver = os.path.join(device_path, "device", "driver")
    if os.path.islink(driver):
        driver_name = os.path.basename(os.path.realpath(driver))
        return driver_name == EFA_DRIVER, f"driver {driver_name}"
    if _EFA_NAME.match(name):
        return True, "an EFA device name"
    return False, "no Amazon PCI function, efa driver or EFA device name"
