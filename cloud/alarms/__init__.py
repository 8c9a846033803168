"""Alarm management on the cloud side (issue 16): incident storage, EEMUA 191 KPIs, the operator CLI."""
