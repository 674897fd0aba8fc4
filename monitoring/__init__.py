"""Monitoring: live metrics, drift, alerts, dashboards and the retraining scheduler.

* :mod:`.live_metrics` + :mod:`.job` - ``ctr monitor``: the prediction log joined with the
  observed labels, per model version x window (hour, day) x slice; :func:`.job.monitor_day`
  is the demo's entry point.
* :mod:`.drift` - feature drift (PSI against each version's training window) and parameter
  drift between consecutive registered versions.
* :mod:`.alerts` - threshold rules (``alert_rules.toml``) -> ``alerts`` table, log, webhook.
* :mod:`.scheduler` (the pure decision) + :mod:`.schedule_job` - ``ctr schedule``.
* :mod:`.dashboard` + ``static/`` - ``ctr dashboard``, reading the export of :mod:`.export`.
* :mod:`.tables` - the Delta tables' schemas and the one write path.
"""
