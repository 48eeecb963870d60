"""Self-contained HTML reports of instseg output folders (``instseg report DIR``); see
:mod:`instseg.reporting.builder`."""

from instseg.reporting.builder import Report, ReportError, build_report, collect_report

__all__ = ["Report", "ReportError", "build_report", "collect_report"]
