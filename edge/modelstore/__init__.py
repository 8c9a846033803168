"""Model bundles on the edge: receive, verify, store, shadow, promote and roll back (issue 17).

The public surface is ``manager.ModelManager`` (wired by ``edge/app.py``) and ``settings.ModelStoreSettings``
(the ``models`` section of the edge config); the modules behind it each do one job:

- ``reasons``    -- why a bundle is refused (the label of ``model_bundles_refused_total``)
- ``topics``     -- the MQTT topics of contracts.md (bundle slots, commands, results)
- ``assembly``   -- chunks + head -> the bundle's bytes (sizes and sha256 checked)
- ``reader``     -- bytes -> verified manifest and arrays (signature, archive layout)
- ``compat``     -- a verified bundle against this plant (template, signal order, kind)
- ``convert``    -- bundle arrays -> the machine/RUL model objects the kernels run
- ``store``      -- bundles and slot state in the state directory (survive a restart)
- ``shadow``     -- a candidate machine model scored beside the active one, alarms counted only
- ``manager``    -- the life cycle on the event loop: shadow, promote, roll back, commands, health

Nothing is re-exported here: the config loader imports only ``edge.modelstore.settings``, which must not
pull the detector kernels in.
"""
