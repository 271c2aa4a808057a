"""What the node is: its EFA devices in sysfs, their PCI neighbours, ENIs, IMDS identity, Slurm jobs."""
