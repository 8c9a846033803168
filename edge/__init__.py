"""plantwire edge gateway: acquisition (OPC-UA, Modbus), detectors, encoding, store-and-forward, MQTT."""
