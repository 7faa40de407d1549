"""Metrics, health checks and log setup: what an operator looks at (issue 10, items 1-3).

`metrics` defines the Prometheus series and renders `/metrics`; `health` answers `/healthz` and
`/readyz`; `logs` formats log lines (text or JSON) with the request id; `http` holds the ASGI
middleware of the API and the small HTTP server `tikosms worker --health-port` runs.
"""
