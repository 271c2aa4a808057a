"""Commands around the agent: doctor, top, the simulator, deploy, cost, snapshot, topology."""
