"""The cloud's side of the model loop (issue 17): fit models from the history InfluxDB holds, sign them into
bundles (``plantwire.bundle``), publish them to gateways over MQTT and read back what each gateway runs.

One module per job: ``keys`` (signing keys), ``history`` (reading InfluxDB), ``exclude`` (what is not normal
operation), ``fit`` (models per template), ``store`` (the bundle directory), ``publish`` (MQTT delivery),
``status`` (gateways' reported versions), ``cli`` (``plantwire models``). See docs/models.md.
"""
