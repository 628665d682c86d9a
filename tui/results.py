"""Results: evaluation runs (both metric families) and experiment reports, with a plot of one metric."""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Markdown, Select
from textual.widgets.data_table import ColumnKey
from textual_plotext import PlotextPlot

from ..engine import browse
from ..engine.evaluation.metrics import QUALITY, SUMMARY, metric
from ..engine.evaluation.report import list_reports
from .base import KdScreen, plain
from .messages import DataChanged, ResultsLoaded

# From the engine's table of metrics: strict ones first in the chooser, the summary ones as columns.
# The chooser opens on strict F1, the headline number, then the other strict ones, then AICL's.
METRICS = tuple((m.key, m.label) for m in sorted(QUALITY, key=lambda m: (m.family != "strict", m.key != "strict_f1"))
                if m.summary) + (
    (metric("seconds_per_session").key, metric("seconds_per_session").label),)
COLUMNS = tuple(m.key for m in SUMMARY)
METHOD_MIN = 16


def metric_value(run: browse.EvalRunRow, key: str) -> float | None:
    m = run.metrics
    if key == "seconds_per_session" and "seconds_per_session" not in m:
        secs, n = m.get("seconds"), m.get("sessions")
        return secs / n if secs is not None and n else None
    value = m.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def find_reports(db) -> list[dict[str, str]]:
    """Experiment reports written by `kdbundle experiment report` (name, Markdown path), newest last,
    with the newest one's text read here (in the worker) rather than on the event loop."""
    reports = [dict(r) for r in list_reports(db)]
    if reports:
        path = Path(reports[-1]["path"])
        reports[-1]["text"] = path.read_text(encoding="utf-8") if path.is_file() else f"(missing: {path})"
    return reports


class ResultsScreen(KdScreen):
    MODE = "results"
    BINDINGS = [
        Binding("m", "cycle_metric", "Metric"),
        Binding("r", "reload", "Reload"),
        Binding("e", "toggle_reports", "Reports"),
        Binding("o", "open_report", "Open report"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[browse.EvalRunRow] = []
        self.reports: list[dict[str, str]] = []
        self.plotted: list[tuple[str, float]] = []  # (label, value) bars currently drawn
        self.opened: str | None = None  # the report last handed to the system viewer
        self._filtered = False  # the dataset filter starts on the newest real dataset once, then is the user's

    def compose(self) -> ComposeResult:
        yield from self.compose_nav()
        with Horizontal(classes="controls"):
            yield Select([(label, key) for key, label in METRICS], value="strict_f1", allow_blank=False,
                         id="metric", compact=True)
            yield Select([], prompt="all datasets", id="r-dataset", compact=True)
        with Vertical(id="results-body"):
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            yield PlotextPlot(id="plot")
            yield Markdown("", id="report")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_column("dataset/split", key="dataset", width=18)
        table.add_column("method", key="method", width=METHOD_MIN)  # widened to the table: whole model names
        table.add_column("fields", key="fields", width=7)
        for key in COLUMNS:
            table.add_column(metric(key).compact, key=key, width=4)
        table.add_column("s/ses", key="sps", width=5)
        self.query_one("#report").display = False
        self.action_reload()

    @on(DataChanged)
    def _data_changed(self, msg: DataChanged) -> None:
        """Another process changed the database: re-read what this screen picks from."""
        self.load()

    def on_screen_resume(self) -> None:
        self.action_reload()

    @work(thread=True, group="results", description="Reading results", exclusive=True, exit_on_error=False)
    def load(self) -> None:
        db = self.app.db()
        runs = browse.eval_runs(db)
        real = {d.name for d in browse.dataset_summaries(db) if d.format != "demo"}
        newest_real = next((r.dataset for r in reversed(runs) if r.dataset in real), None)
        self.post_message(ResultsLoaded(runs, find_reports(db), newest_real))

    def action_reload(self) -> None:
        self.load()

    @on(ResultsLoaded)
    def _loaded(self, msg: ResultsLoaded) -> None:
        self.runs, self.reports = msg.runs, msg.reports
        select = self.query_one("#r-dataset", Select)
        current = select.value
        names = sorted({r.dataset for r in msg.runs})
        select.set_options([(plain(n), n) for n in names])
        if not self._filtered and msg.newest_real in names:
            # Real results first: demo runs and real ones side by side compare nothing.
            self._filtered = True
            select.value = msg.newest_real
        elif current in names:
            select.value = current
        self._fill()

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit_columns)

    def _fit_columns(self) -> None:
        """The method column takes the width the others leave (the table spans the screen)."""
        table = self.query_one("#runs", DataTable)
        inner = table.scrollable_content_region.width
        if not inner:
            return
        others = sum(c.width + 2 * table.cell_padding for c in table.columns.values() if c.key.value != "method")
        longest = max((len(r.label) + 12 for r in self.runs), default=0)  # "✗ failed" marks fit too
        column = table.columns[ColumnKey("method")]
        width = max(METHOD_MIN, inner - others - 2 * table.cell_padding, min(longest, 80))
        if column.width != width:
            column.width = width
            table.refresh(layout=True)

    @property
    def visible_runs(self) -> list[browse.EvalRunRow]:
        ds = self.query_one("#r-dataset", Select).value
        return [r for r in self.runs if ds is Select.NULL or r.dataset == ds]

    @on(Select.Changed)
    def _fill(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.clear()
        runs = self.visible_runs
        for r in runs:
            cells = []
            for key in COLUMNS:
                v = metric_value(r, key)
                cells.append("-" if v is None else f"{v:.2f}")
            sps = metric_value(r, "seconds_per_session")
            ok = r.status in ("done", "complete")
            method = Text(r.label) if ok else Text(f"{r.label} ✗ {r.status}", style="bold red")
            shown = {"titles": "titles", "titles+categories": "+cats"}.get(r.fields or "", "-")
            fields = Text(shown + " LEAKY", style="bold red") if r.leaky else Text(shown)
            table.add_row(Text(f"{r.dataset}/{r.split}"), method, fields, *cells,
                          "-" if sps is None else f"{sps:.2f}", key=str(r.id))
        table.border_title = (f"{len(runs)} evaluation run{'s' if len(runs) != 1 else ''}" if runs
                              else "no evaluation runs yet: launch an eval job (3, n)")
        self._fit_columns()
        self._plot(runs)

    def _plot(self, runs: list[browse.EvalRunRow]) -> None:
        key = str(self.query_one("#metric", Select).value)
        label = dict(METRICS)[key]
        several = len({r.dataset for r in runs}) > 1
        # One bar per finished run (a failed one has no score: it is marked in the table, not drawn as 0).
        points = [((f"{r.id}:" + (f"{r.dataset} " if several else "") + r.label)[:32], metric_value(r, key))
                  for r in runs if r.status in ("done", "complete")]
        points = [(n, v) for n, v in points if v is not None]
        self.plotted = points
        widget = self.query_one("#plot", PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        if points:
            plt.bar([n for n, _ in points], [v for _, v in points], orientation="horizontal", width=0.4)
            top = max(v for _, v in points)
            # From 0 always: scores and times are never negative, and a lone 0 must not draw -1..1.
            plt.xlim(0, top * 1.05 if top > 0 else 1)
        plt.title(label + ("" if points else " (no data)"))
        widget.refresh()

    def action_cycle_metric(self) -> None:
        select = self.query_one("#metric", Select)
        keys = [k for k, _ in METRICS]
        select.value = keys[(keys.index(str(select.value)) + 1) % len(keys)]

    def action_toggle_reports(self) -> None:
        report = self.query_one("#report", Markdown)
        report.display = not report.display
        self.query_one("#plot").display = not report.display
        if report.display:
            if not self.reports:
                report.update("No experiment reports yet. Run `kdbundle experiment run FILE.toml`, then "
                              "`kdbundle experiment report NAME`.")
            else:
                newest = self.reports[-1]
                report.update(f"# {newest.get('name', 'report')}\n\n{newest.get('text', '')}")

    def action_open_report(self) -> None:
        """The terminal cannot draw the report's PNG figures: open the Markdown (figures embedded) in the
        system's viewer / browser."""
        if not self.reports:
            self.notify("No experiment reports yet: `kdbundle experiment report NAME` writes one.", severity="warning")
            return
        path = Path(self.reports[-1]["path"])
        self.opened = path.as_uri()
        self.app.open_url(self.opened)
        self.notify(f"opening {path}")
