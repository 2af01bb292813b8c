"""One renderer per section of ``report.html``; :func:`sia_report.html.render` puts them together.

Each takes the :class:`~sia_report.data.RunInfo` read from the run folder and returns HTML with
all run text escaped.
"""
