"""Metric queries by area; each function takes a ReportQuery and cites METRICS.md."""
