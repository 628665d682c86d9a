"""Jobs: the live list (progress, ETA, throughput), log tail, loss and valid curves; launch, cancel, resume.

Jobs run in their own processes (engine.jobs.runner.start_job). This screen only reads their rows, which the
app polls from SQLite in a thread worker, and sets stop flags.
"""
from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Log, ProgressBar, Sparkline, Static

from ..engine import browse
from ..engine.jobs import runner as J
from .base import ConfirmScreen, KdScreen, metrics_line
from .launch import LaunchScreen
from .messages import JobDetailLoaded, JobsPolled, JobSteered

STATUS_STYLE = {"queued": "yellow", "running": "bold cyan", "stopping": "magenta", "done": "green",
                "failed": "bold red", "cancelled": "magenta"}


def _ts(value: str | None) -> float | None:
    return _dt.datetime.fromisoformat(value).timestamp() if value else None


def job_elapsed(job: dict[str, Any], now: float | None = None) -> float | None:
    start = _ts(job.get("started_at"))
    if start is None:
        return None
    end = _ts(job.get("finished_at")) if job["status"] in J.FINAL else None
    return max(0.0, (end or now or time.time()) - start)


def job_rate(job: dict[str, Any], now: float | None = None) -> float | None:
    """Units of work per second since the job started (None before the first unit)."""
    elapsed = job_elapsed(job, now)
    return job["done"] / elapsed if elapsed and job.get("done") else None


def text_bar(done: int, total: int | None, width: int = 10) -> Text:
    if not total:
        return Text(f"{'·' * width} {done}", style="dim")
    filled = min(width, round(width * done / total))
    return Text.assemble(("█" * filled, "cyan"), ("░" * (width - filled), "dim"), f" {done}/{total}")


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def fmt_rate(r: float | None) -> str:
    if r is None:
        return "-"
    if r >= 100:
        return f"{r:.0f}/s"
    if r >= 10:
        return f"{r:.1f}/s"
    # One unit style for every job (units per second), fast or slow: a column never mixes "/s" and "s/u".
    return f"{r:.2f}/s" if r >= 0.1 else f"{r:.3f}/s" if r >= 0.001 else "<.001/s"


def result_summary(result: Any) -> Text:
    """One line from a finished job's result: both metric families for evaluations, else a few numbers."""
    if not isinstance(result, dict):
        return Text(str(result)[:200], style="dim")
    if "strict_f1" in result:
        line = metrics_line(result)
        line.append(f"{result.get('scored', '-')}/{result.get('sessions', '-')} sessions answered", "dim")
        return line
    parts = [f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}"
             for k, val in result.items() if isinstance(val, (int, float, str)) and len(str(val)) < 40]
    return Text(" ".join(parts[:8]), style="dim")


# ------------------------------------------------------------------ the screen


class JobsScreen(KdScreen):
    MODE = "jobs"
    BINDINGS = [
        Binding("n", "new", "New"),
        Binding("c", "cancel_job", "Cancel"),
        Binding("r", "resume_job", "Resume"),
        Binding("l", "focus_log", "Log", show=False),
        Binding("s", "toggle_samples", "Samples"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[dict[str, Any]] = []
        self.selected: int | None = None
        self._log_after = 0
        self._step_after = -1
        self._losses: list[float] = []
        self._samples_at: tuple[int, int] | None = None  # (job, validations) the samples pane shows

    def compose(self) -> ComposeResult:
        yield from self.compose_nav()
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        with Vertical(id="job-detail"):
            yield Static("No job selected. Press n to launch one.", id="job-head", classes="pane-title")
            with Horizontal(id="job-progress-row"):
                yield ProgressBar(id="job-progress", show_eta=False)
                yield Static("", id="job-rate")
            with Horizontal(id="loss-row"):
                yield Static("loss", id="loss-label")
                yield Sparkline([], id="loss", summary_function=min)
            with Horizontal(id="valid-row"):
                yield Static("valid -", id="valid-label")
                yield Sparkline([], id="valid", summary_function=max)
            yield Log(id="job-log", max_lines=2000)
            with VerticalScroll(id="samples-pane"):
                yield Static("", id="job-samples")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#jobs", DataTable)
        table.add_column("id", key="id", width=3)
        table.add_column("kind", key="kind", width=16)
        table.add_column("status", key="status", width=9)
        table.add_column("progress", key="progress", width=18)
        table.add_column("ETA", key="eta", width=6)
        table.add_column("rate", key="rate", width=7)
        table.add_column("thr", key="threads", width=3)
        table.add_column("error", key="error")
        self.query_one("#loss-row").display = False
        self.query_one("#valid-row").display = False
        self.query_one("#job-progress-row").display = False
        self.query_one("#samples-pane").display = False
        self._show_jobs(self.app.jobs)
        self.set_interval(1.0, self._poll_detail, name="job-detail")

    def on_screen_resume(self) -> None:
        self._show_jobs(self.app.jobs)

    # ------------------------------------------------------------ list

    @on(JobsPolled)
    def _polled(self, msg: JobsPolled) -> None:
        self._show_jobs(msg.jobs)

    def _show_jobs(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        table = self.query_one("#jobs", DataTable)
        keep = self.selected
        now = time.time()
        cells_by_key = {}
        for j in jobs:
            status = "stopping" if j["status"] == "running" and j.get("stop_requested") else j["status"]
            cells_by_key[str(j["id"])] = (
                str(j["id"]), j["kind"], Text(status, style=STATUS_STYLE.get(status, "")),
                Text(j["phase"].split(" · ")[0], style="cyan") if j.get("phase") else text_bar(j["done"] or 0, j["total"]),
                j["phase"].split("ETA ")[1].split(" ")[0] if j.get("phase") and "ETA " in j["phase"]
                else fmt_seconds(j["eta_seconds"]),
                fmt_rate(job_rate(j, now)),
                str(j["threads"]) if j["status"] == "running" and j.get("threads") else "",  # cores it holds now
                Text((j["error"] or "").splitlines()[0] if j["error"] else "", style="red"),
            )
        existing = [rk.value for rk in table.rows]
        if existing == list(cells_by_key):
            for key, cells in cells_by_key.items():  # update in place: no flicker, cursor kept
                for col, value in zip(("id", "kind", "status", "progress", "eta", "rate", "threads", "error"), cells):
                    table.update_cell(key, col, value)
        else:
            table.clear()
            for key, cells in cells_by_key.items():
                table.add_row(*cells, key=key)
        if keep is not None and str(keep) in cells_by_key and table.cursor_row != table.get_row_index(str(keep)):
            table.move_cursor(row=table.get_row_index(str(keep)))
        table.border_title = (f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}" if jobs
                              else "no jobs yet: press n to launch one")
        self._show_head()

    @on(DataTable.RowHighlighted, "#jobs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is None:
            return
        job_id = int(event.row_key.value)
        if job_id != self.selected:
            self.selected = job_id
            self._log_after, self._step_after, self._losses = 0, -1, []
            self.query_one("#job-log", Log).clear()
            self.query_one("#loss", Sparkline).data = []
            self.query_one("#valid", Sparkline).data = []
            self._show_head()
            self._poll_detail()
            if self.query_one("#samples-pane").display:
                self.read_samples(job_id)

    def job(self, job_id: int | None) -> dict[str, Any] | None:
        return next((j for j in self.jobs if j["id"] == job_id), None)

    def _show_head(self) -> None:
        job = self.job(self.selected)
        if job is None:
            return
        params = " ".join(f"{k}={v}" for k, v in job["params"].items() if v is not None)
        head = Text.assemble((f"job {job['id']} {job['kind']} ", "bold"),
                             (job["status"], STATUS_STYLE.get(job["status"], "")), f"  {params}")
        if job["error"]:
            head.append(f"\n{job['error'].splitlines()[0]}", style="red")
        elif job["result"]:
            head.append("\n")
            head.append_text(result_summary(job["result"]))
        self.query_one("#job-head", Static).update(head)
        self.query_one("#job-progress-row").display = True
        bar = self.query_one("#job-progress", ProgressBar)
        bar.update(total=job["total"] or None, progress=job["done"] or 0)
        elapsed = job_elapsed(job)
        self.query_one("#job-rate", Static).update(
            f"ETA {fmt_seconds(job['eta_seconds'])} · {fmt_rate(job_rate(job))} · {fmt_seconds(elapsed)} elapsed"
        )
        self.query_one("#loss-row").display = job["kind"] == "train"
        # Shown once the run has a validation (the detail poll fills the curve).
        self.query_one("#valid-row").display = job["kind"] == "train" and bool(self.query_one("#valid", Sparkline).data)

    # ------------------------------------------------------------ detail (log tail, loss curve)

    def _poll_detail(self) -> None:
        if self.selected is not None and self.app.screen is self:
            job = self.job(self.selected)
            self.read_detail(self.selected, self._log_after, self._step_after, bool(job and job["kind"] == "train"))

    @work(thread=True, group="job-detail", description="Reading job log", exclusive=True, exit_on_error=False)
    def read_detail(self, job_id: int, log_after: int, step_after: int, is_train: bool) -> None:
        db = self.app.db()
        log = browse.job_log_since(db, job_id, log_after)
        run, points, valid = None, [], []
        if is_train:
            run = browse.train_run_for_job(db, job_id)
            if run:
                points = browse.train_metrics(db, run["id"], step_after)
                valid = browse.valid_points(db, run["id"])
        self.post_message(JobDetailLoaded(job_id, log, points, run, valid))

    @on(JobDetailLoaded)
    def _detail(self, msg: JobDetailLoaded) -> None:
        if msg.job_id != self.selected:
            return
        new = [line for line in msg.log if line["id"] > self._log_after]
        if new:
            self._log_after = new[-1]["id"]
            self.query_one("#job-log", Log).write_lines(
                f"{line['ts'][11:19]} {line['level'][:4]:4} {line['message']}" for line in new
            )
        pts = [p for p in msg.points if p.step > self._step_after]
        if pts:
            self._step_after = pts[-1].step
            self._losses += [p.loss for p in pts if p.loss is not None]
            self.query_one("#loss", Sparkline).data = list(self._losses)
        if msg.run is not None:
            label = f"loss {self._losses[-1]:.3f}" if self._losses else "loss -"
            self.query_one("#loss-label", Static).update(f"{label}\nstep {max(self._step_after, 0)}")
        if msg.valid:
            # Strict F1 on the valid split after each epoch: what model selection keeps the best of.
            best = max(msg.valid, key=lambda v: v.strict_f1 or 0.0)
            self.query_one("#valid-row").display = True
            self.query_one("#valid", Sparkline).data = [v.strict_f1 or 0.0 for v in msg.valid]
            self.query_one("#valid-label", Static).update(
                f"valid F1 {msg.valid[-1].strict_f1 or 0:.3f}\nbest {best.strict_f1 or 0:.3f}@{best.step}")
        if self.query_one("#samples-pane").display and self._samples_at != (msg.job_id, len(msg.valid)):
            self._samples_at = (msg.job_id, len(msg.valid))  # a new validation: its samples
            self.read_samples(msg.job_id)

    # ------------------------------------------------------------ samples (what the student answered)

    def action_toggle_samples(self) -> None:
        """s: the newest and best validation's random, best and worst sessions, truth beside answer, in place
        of the log (s again: the log)."""
        pane = self.query_one("#samples-pane")
        pane.display = not pane.display
        self.query_one("#job-log", Log).display = not pane.display
        if pane.display and self.selected is not None:
            self._samples_at = None
            self.query_one("#job-samples", Static).update("reading the validations' answers...")
            self.read_samples(self.selected)

    @work(thread=True, group="job-samples", description="Reading validation samples", exclusive=True,
          exit_on_error=False)
    def read_samples(self, job_id: int) -> None:
        from ..engine.student.samples import sample_lines, validation_samples

        db = self.app.db()
        run = browse.train_run_for_job(db, job_id)
        lines = sample_lines(validation_samples(db, run["id"])) if run else \
            ["samples: a train job's validations (this job has no training run)"]
        text = Text("\n".join(lines))
        for word, style in (("truth ", "green"), ("answer ", "cyan"), ("worse", "red"), ("better", "green")):
            text.highlight_words([word], style)

        def show() -> None:
            if self.selected == job_id:
                self.query_one("#job-samples", Static).update(text)

        self.app.call_from_thread(show)

    # ------------------------------------------------------------ actions

    def action_new(self, kind: str = "eval") -> None:
        self.app.push_screen(LaunchScreen(kind), self._launch_chosen)

    def _launch_chosen(self, choice: tuple[str, dict[str, Any]] | None) -> None:
        if choice:
            self.app.launch_job(*choice)

    def select_job(self, job_id: int) -> None:
        """Highlight a job (e.g. the one just launched) once the poller has listed it."""
        self.selected = job_id
        self._log_after, self._step_after, self._losses = 0, -1, []
        self.query_one("#valid", Sparkline).data = []
        self.query_one("#job-log", Log).clear()
        self._show_jobs(self.app.jobs)

    def action_cancel_job(self) -> None:
        job = self.job(self.selected)
        if job is None:
            return
        if job["status"] in J.FINAL:
            self.notify(f"job {job['id']} is already {job['status']}", severity="warning")
            return
        self.app.push_screen(
            ConfirmScreen(f"Stop job {job['id']} ({job['kind']})? Finished work is kept; resume with r."),
            lambda ok: self.cancel(job["id"]) if ok else None,
        )

    @work(thread=True, group="jobs-steer", description="Cancelling job", exit_on_error=False)
    def cancel(self, job_id: int) -> None:
        J.cancel_job(self.app.db(), job_id)
        self.post_message(JobSteered(job_id, f"job {job_id}: stop requested"))

    def action_resume_job(self) -> None:
        if self.selected is not None:
            self.resume(self.selected)

    @work(thread=True, group="jobs-steer", description="Resuming job", exit_on_error=False)
    def resume(self, job_id: int) -> None:
        J.resume_job(self.app.db(), self.app.db_path, job_id)
        self.post_message(JobSteered(job_id, f"job {job_id} resumed"))

    @on(JobSteered)
    def _steered(self, msg: JobSteered) -> None:
        self.notify(msg.text, title="jobs")
        self.app.poll_jobs()

    def action_focus_log(self) -> None:
        self.query_one("#job-log", Log).focus()


