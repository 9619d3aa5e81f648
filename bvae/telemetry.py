"""Nothing phones home: the switches that stop MLflow, Prefect and DVC from looking up their
telemetry hosts (every process would otherwise). The CLI, the flows and the tests set them."""

TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
}
