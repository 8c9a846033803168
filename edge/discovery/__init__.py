"""Commissioning: find out what a server holds before describing it (``plantwire discover``).

- ``opcua_browse``: browse an OPC-UA server's address space (same security as the edge, within its
  operation limits) into a list of variables with node id, data type, unit and EURange.
- ``opcua_plant``: turn that list into a plant file the edge reads unchanged.
- ``modbus_probe``: find which address ranges of each Modbus table answer and which raise exceptions.
- ``modbus_map``: turn a probe into a register-map CSV skeleton (plantwire.registermap's format).
- ``cli``: the command line (progress on stderr, one clear line and a non-zero exit on failure).
"""

from .errors import DiscoveryError

__all__ = ["DiscoveryError"]
