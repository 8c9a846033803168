"""Simulated plant: OPC-UA and Modbus TCP servers serving plausible signals with injected faults."""
