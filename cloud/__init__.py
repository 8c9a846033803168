"""plantwire cloud ingestor: MQTT batches in, InfluxDB points out, acknowledged only once stored."""
