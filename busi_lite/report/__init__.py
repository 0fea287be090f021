"""Reports: terminal sweep table and CSV, the HTML/Markdown report with the paper's
figures and tables, and the duplicate contact sheet.

Modules: ``inputs`` (load and check models, sweeps, flag evidence; ReportInputs),
``stats`` (mean [95 % CI] text, paper figures, sweep table/CSV, curves over seeds),
``figures`` (matplotlib, imported lazily), ``tables``, ``external`` (the "Another
hospital" section), ``render`` (build_report,
HTML/Markdown), ``sheet`` (duplicate contact sheet, Pillow only). The report never
builds command lines: the CLI passes them in ``ReportInputs.command/steps``.
"""

from busi_lite.report.inputs import (
    ExternalInput,
    ModelInput,
    ReportError,
    ReportInputs,
    SweepInput,
    load_external_input,
    load_flags_input,
    load_model_input,
    load_sweep_input,
)
from busi_lite.report.render import build_report, render_html, render_md
from busi_lite.report.sheet import duplicate_sheet
from busi_lite.report.stats import (
    best_config,
    curve_names,
    paper_figures,
    paper_name,
    sweep_table,
    write_sweep_csv,
)
from busi_lite.report.tables import Figure, Section, Table, selection_table

__all__ = ["ExternalInput", "load_external_input", "ModelInput", "ReportError", "ReportInputs", "SweepInput", "load_flags_input", "load_model_input",
           "load_sweep_input", "build_report", "render_html", "render_md", "duplicate_sheet", "best_config",
           "curve_names", "paper_figures", "paper_name", "sweep_table", "write_sweep_csv", "Figure", "Section",
           "Table", "selection_table"]
