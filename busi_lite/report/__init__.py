"""Reports: terminal sweep table and CSV, the HTML/Markdown report with the paper's
figures and tables, and the duplicate contact sheet.

Modules: ``inputs`` (load and check models, sweeps, flag evidence; ReportInputs),
``stats`` (mean [95 % CI] text, paper figures, sweep table/CSV, curves over seeds),
``figures`` (matplotlib, imported lazily), ``tables``, ``external`` (the "Another
hospital" section), ``render`` (build_report,
HTML/Markdown), ``sheet`` (duplicate contact sheet, Pillow only). The report never
builds command lines: the CLI passes them in ``ReportInputs.command/steps``.
Import each name from the module that defines it (no re-exports here).
"""
