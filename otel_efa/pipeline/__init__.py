"""The data flow of one interval: read, rates, the Snapshot, instruments, the agent loop."""
