"""The promotion gate: thresholds, the evidence read from the registry, the pure decision,
its statistics, the promotion lock and the report written on the version."""
