"""Arena: one session, teacher and student side by side, streaming token by token, each scored.

Both generations are logged under one comparison id. The student's utilization (zero-shot, ICL, SFT,
ICL+SFT) and knowledge set can be switched in place; the next run uses them.

`c` switches to student vs student: two students (models or baselines) answer the same sessions of a dataset
split (or a seeded sample of N), and a table lists each session's scores for both with the difference, under a
summary line with the paired bootstrap interval of B − A (engine.evaluation.versus; stored answers are reused).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Select, Static
from textual.worker import get_current_worker

from ..engine import browse
from ..engine.data.datasets import SPLITS
from ..engine.evaluation.evaluate import BASELINES, EvalConfig, EvalStopped
from ..engine.evaluation.metrics import metric
from ..engine.llm.catalogue import DEFAULT_STUDENT, DEFAULT_TEACHER
from ..engine.llm.generate import PRODUCT_SEPARATOR, split_products
from ..engine.types import FINE_TUNED, UTILIZATIONS, WITH_KNOWLEDGE, Product, Session
from .arena_run import GenerationStopped, Outcome, run_pane
from .base import KdScreen, WorkerErrors, describe_error, metrics_line, plain
from .messages import (
    ArenaChoicesLoaded,
    CompareFinished,
    CompareProgress,
    DataChanged,
    GenerationFinished,
    SessionLoaded,
    SessionResolved,
    Token,
)
from .sessions import bundle_tag

PANES = ("teacher", "student")


def truth_lines(session: Session | None) -> Text:
    """The ground truth with its intents, shown under each pane's answer so the two read side by side."""
    out = Text()
    for b in (session.bundles if session else []):
        out.append("truth ", style="dim")
        out.append(f"{{{', '.join(map(str, sorted(b.items)))}}} ")
        out.append(b.intent or "-", style="italic dim")
        out.append("\n")
    return out


def format_scores(scores: dict[str, float] | None) -> Text:
    if not scores:
        return Text("no ground truth to score against", style="dim")
    line = metrics_line(scores)
    line.rstrip()
    return line


class ArenaScreen(KdScreen):
    MODE = "arena"
    BINDINGS = [
        Binding("ctrl+r", "run", "Run"),
        Binding("escape", "stop", "Stop"),
        Binding("u", "cycle_utilization", "Use"),
        Binding("k", "cycle_kset", "Set"),
        Binding("s", "pick", "Pick"),
        # t is said where a session is missing (the line above the panes), so the footer has room for c at 60 columns
        Binding("t", "type_products", "Type", show=False),
        Binding("c", "toggle_compare", "A/B"),  # student A vs student B (a longer word pushes "? Help" out at 60)
        Binding("p", "pull_teacher", "Pull teacher", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.session: Session | None = None
        self._session_asked: int | None = None  # the stored session picked last (None: typed products, or none yet)
        self.run_no = 0
        self.running: set[str] = set()
        self.streams: dict[str, str] = {p: "" for p in PANES}
        self.pieces: dict[str, int] = {p: 0 for p in PANES}  # streamed pieces (about one token each)
        self.started: dict[str, float] = {}  # monotonic time of each pane's first piece
        self.comparison_id: str | None = None
        self.installed: list[str] = []
        self.knowledge_sets: list[str] = []
        self._defaulted: dict[str, Any] = {}  # what each model picker was last set to by default, not by the user
        self._hinted = False
        self.teacher_missing = False
        self.outcomes: dict[str, Outcome] = {}
        # (pane, model name) -> backend, used instead of the registry's (tests drive the panes with a scripted model)
        self.backend_for: Callable[[str, str], Any] | None = None
        # Student vs student (c): the run number (stale messages are dropped), whether one runs, its result.
        self.comparing = False
        self.compare_run = 0
        self.compare_running = False
        self.compare_result: dict[str, Any] | None = None
        self.datasets: list[str] = []
        self.contenders: list[str] = []
        """What A and B can be: the installed models, then the baselines."""

    def compose(self) -> ComposeResult:
        yield from self.compose_nav()
        with Horizontal(classes="controls", id="arena-controls"):
            yield Select([], prompt="teacher", id="teacher", compact=True)
            yield Select([], prompt="student", id="student", compact=True)
            yield Select([(u, u) for u in UTILIZATIONS], value="zero-shot", allow_blank=False, id="utilization",
                         compact=True)
            yield Select([], prompt="no knowledge", id="kset", compact=True)
        with Horizontal(classes="controls", id="compare-controls"):
            yield Select([], prompt="student A", id="compare-a", compact=True)
            yield Select([], prompt="student B", id="compare-b", compact=True)
            yield Select([], prompt="dataset", id="compare-dataset", compact=True)
            yield Select([(x, x) for x in SPLITS], value="test", allow_blank=False, id="compare-split", compact=True)
            yield Input(placeholder="sessions: all", id="compare-limit", type="integer", compact=True)
        with Vertical(id="compare-view"):
            yield Static(COMPARE_HINT, id="compare-status")
            yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="compare-summary")
        yield Static("No session picked: press s to pick one by id, t to type products, or a on the Sessions screen; "
                     "c compares two students over a dataset split.", id="arena-session")
        yield Input(placeholder=f"products, separated by {PRODUCT_SEPARATOR}  (enter to use)", id="arena-products", compact=True)
        with Horizontal(id="arena-panes"):
            for pane in PANES:
                with Vertical(id=f"pane-{pane}", classes="arena-pane"):
                    yield Static("", id=f"stats-{pane}", classes="arena-stats")
                    with VerticalScroll(id=f"scroll-{pane}", classes="arena-stream"):
                        yield Static("", id=f"stream-{pane}")
                    yield Static("", id=f"score-{pane}", classes="arena-score")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for pane in PANES:
            self.query_one(f"#pane-{pane}").border_title = pane
            self._reset_pane(pane)
        table = self.query_one("#compare-table", DataTable)
        f1, p = metric("strict_f1"), metric("strict_precision")
        for label, key in (("session", "session"), ("products", "products"), (f"A {f1.compact}", "a_f1"),
                           (f"B {f1.compact}", "b_f1"), (f"B−A {f1.compact}", "diff"), (f"A {p.compact}", "a_p"),
                           (f"B {p.compact}", "b_p")):
            table.add_column(label, key=key)
        self.query_one("#teacher", Select).focus()

    @on(DataChanged)
    def _data_changed(self, msg: DataChanged) -> None:
        """Another process changed the database: re-read what this screen picks from."""
        self.load_choices()

    def on_screen_resume(self) -> None:
        self.load_choices()

    # ------------------------------------------------------------ choices and session

    @work(thread=True, group="arena-choices", description="Reading models", exclusive=True, exit_on_error=False)
    def load_choices(self) -> None:
        from ..engine.llm import registry

        db = self.app.db()
        infos = registry.list_models(db)
        names = [m.name for m in infos]
        installed = [m.name for m in infos if m.installed]
        hint = None
        if not installed:
            hint = f"No model installed. Run `kdbundle models pull {DEFAULT_STUDENT}` (or pull it on the Models screen, 4)."
        sets = [s.name for s in browse.knowledge_sets(db)]
        datasets = [d.name for d in browse.dataset_summaries(db) if d.bundles]
        self.post_message(ArenaChoicesLoaded(names, installed, sets, hint, datasets, registry.served_student(db, infos)))

    @on(ArenaChoicesLoaded)
    def _choices(self, msg: ArenaChoicesLoaded) -> None:
        self.installed = msg.installed
        usable = msg.installed or msg.models
        for sel_id, default in (("#teacher", DEFAULT_TEACHER), ("#student", msg.student or DEFAULT_STUDENT)):
            select = self.query_one(sel_id, Select)
            current = select.value
            select.set_options([(plain(n if n in msg.installed else f"{n} (not installed)"), n) for n in usable])
            # The teacher is never the default student in disguise: without the default teacher it is
            # another installed model, or none (its panel says why and how to get one).
            fallback = [n for n in msg.installed if sel_id == "#student" or n not in (DEFAULT_STUDENT, msg.student)]
            # A pick the user made stays; one made by default follows the default (a student exported meanwhile).
            if current in usable and current != self._defaulted.get(sel_id):
                select.value = current
            elif default in msg.installed:
                select.value = default
            elif fallback:
                select.value = fallback[0]
            elif current in usable:
                select.value = current
            self._defaulted[sel_id] = select.value
        self.teacher_missing = DEFAULT_TEACHER not in msg.installed
        kset = self.query_one("#kset", Select)
        current = kset.value
        self.knowledge_sets = list(msg.knowledge_sets)
        kset.set_options([(plain(s), s) for s in msg.knowledge_sets])
        if current in msg.knowledge_sets:
            kset.value = current
        self._compare_choices(msg.installed, msg.datasets)
        if msg.hint:
            if not self._hinted:
                self._hinted = True
                self.notify(msg.hint, title="models", severity="warning", timeout=10, markup=False)
            for pane in PANES:
                self.query_one(f"#stream-{pane}", Static).update(Text(msg.hint, style="yellow"))
        elif self.teacher_missing and not self.running and not self.streams["teacher"]:
            cfg = self.settings()
            self.query_one("#stream-teacher", Static).update(Text(teacher_hint(cfg["teacher"], cfg["student"]),
                                                                  style="yellow"))
        self._titles()

    def action_pull_teacher(self) -> None:
        """Pull the default teacher on the Models screen (with its progress bar)."""
        if not self.teacher_missing:
            self.notify(f"{DEFAULT_TEACHER} is installed already.", title="models")
            return
        self.app.run_worker(self._pull_teacher(), exclusive=False)

    async def _pull_teacher(self) -> None:
        from .models import ModelsScreen

        await self.app.switch_mode("models")
        if isinstance(self.app.screen, ModelsScreen):
            self.app.screen.pull_named(DEFAULT_TEACHER)

    @on(Select.Changed, "#teacher, #student")
    def _titles(self) -> None:
        if self.running:
            return
        cfg = self.settings()
        for pane in PANES:
            self.query_one(f"#pane-{pane}").border_title = f"{pane}: {cfg[pane] or '-'}"
        if self.teacher_missing and not self.streams["teacher"] and "teacher" not in self.outcomes:
            self.query_one("#stream-teacher", Static).update(Text(teacher_hint(cfg["teacher"], cfg["student"]),
                                                                  style="yellow"))

    def pick_session(self, session_id: int) -> None:
        self.load_session(session_id)

    def load_session(self, session_id: int) -> None:
        """Read the session picked last (`_read_session`); an earlier pick's read that ends after it is dropped."""
        self._session_asked = session_id
        self._read_session(session_id)

    @work(thread=True, group="arena-session", description="Reading session", exclusive=True, exit_on_error=False)
    def _read_session(self, session_id: int) -> None:
        self.post_message(SessionLoaded(browse.session_detail(self.app.db(), session_id)))

    @on(SessionLoaded)
    def _session(self, msg: SessionLoaded) -> None:
        if msg.detail is None or msg.detail.session.id != self._session_asked:
            return  # a cancelled thread worker still runs to its end: the pick it read is not the newest
        self.set_session(msg.detail.session)

    def set_session(self, session: Session) -> None:
        self.session = session
        where = f"{session.dataset}/{session.split or '-'} · " if session.dataset else ""
        head = Text.assemble(
            (f"session {session.source_id or '(typed)'}", "bold"),
            f" · {where}{session.n} products · {len(session.bundles)} bundles · ctrl+r runs\n",
        )
        for pos, p in enumerate(session.products, start=1):
            tags = [bundle_tag(i) for i, b in enumerate(session.bundles) if pos in b.items]
            head.append(f"{pos:>2}. ")
            head.append(p.title[:90])
            for t in tags:
                head.append(" ")
                head.append_text(t)
            head.append("\n")
        head.rstrip()
        self.query_one("#arena-session", Static).update(head)
        for pane in PANES:
            self._reset_pane(pane)

    def _reset_pane(self, pane: str, placeholder: bool = True) -> None:
        self.streams[pane] = ""
        self.pieces[pane] = 0
        self.started.pop(pane, None)
        text = Text(f"The {pane}'s answer streams here token by token (ctrl+r); then its bundles are scored "
                    "against the ground truth: ✓ hit, ✗ miss.", style="dim")
        if pane == "teacher" and self.teacher_missing:
            text = Text(teacher_hint(self.settings()["teacher"], self.settings()["student"]), style="yellow")
        self.query_one(f"#stream-{pane}", Static).update(text if placeholder else "")
        self.query_one(f"#stats-{pane}", Static).update("")
        score = self.query_one(f"#score-{pane}", Static)
        score.update("")
        score.display = False

    # ------------------------------------------------------------ running

    def settings(self) -> dict[str, Any]:
        def val(sel: str) -> str | None:
            v = self.query_one(sel, Select).value
            return None if v is Select.NULL else str(v)

        return {"teacher": val("#teacher"), "student": val("#student"), "utilization": val("#utilization"),
                "knowledge_set": val("#kset")}

    def action_run(self) -> None:
        if self.comparing:
            self.start_compare()
            return
        if self.session is None:
            self.notify("Pick a session first (s), or type products (t).", severity="warning")
            return
        if self.running:
            self.notify("Already running; escape stops it.", severity="warning")
            return
        cfg = self.settings()
        if not cfg["teacher"] or not cfg["student"]:
            self.notify(f"No model to run. Run `kdbundle models pull {DEFAULT_STUDENT}`.", severity="error",
                        markup=False)
            return
        self.run_no += 1
        self.comparison_id = uuid.uuid4().hex[:12]
        self.running = set(PANES)
        self.outcomes = {}
        for pane in PANES:
            self._reset_pane(pane, placeholder=False)
            self.query_one(f"#pane-{pane}").add_class("running")
            self.query_one(f"#pane-{pane}").border_title = f"{pane}: {cfg[pane]}"
        self.query_one("#pane-student").border_subtitle = ""
        self.query_one("#stats-teacher", Static).update("loading the model, reading the prompt ...")
        self.query_one("#stats-student", Static).update("waits for the teacher (one model at a time)")
        # One worker runs both, teacher first: two llama.cpp models decoding at once on a small CPU only
        # halve each other's speed (and muddle each pane's tokens/s); one model shared by both panes
        # would take turns on its lock anyway.
        self.generate(self.session, cfg, self.comparison_id, self.run_no)

    @work(thread=True, group="arena", description="Arena generation", exclusive=True, exit_on_error=False)
    def generate(self, session: Session, cfg: dict[str, Any], comparison_id: str, run: int) -> None:
        worker = get_current_worker()
        for pane in PANES:
            def on_token(text: str, pane: str = pane) -> None:
                if worker.is_cancelled:
                    raise GenerationStopped()
                self.post_message(Token(pane, run, text))

            try:
                backend = self.backend_for(pane, cfg[pane]) if self.backend_for else None
                outcome = run_pane(self.app.db(), pane, session, cfg, comparison_id, on_token, backend)
            except Exception as exc:  # one pane failing (model missing, no knowledge set) leaves the other usable
                outcome = Outcome(cfg[pane], error=describe_error(exc))
            self.post_message(GenerationFinished(pane, run, outcome))
            if worker.is_cancelled:
                for rest in PANES[PANES.index(pane) + 1:]:
                    self.post_message(GenerationFinished(rest, run, Outcome(cfg[rest], stopped=True)))
                return

    @on(Token)
    def _token(self, msg: Token) -> None:
        if msg.run != self.run_no or msg.pane not in self.running:
            return  # a piece that arrives after its pane finished never overwrites the final state
        pane = msg.pane
        self.streams[pane] += msg.text
        self.pieces[pane] += 1
        start = self.started.setdefault(pane, time.monotonic())
        self.query_one(f"#stream-{pane}", Static).update(Text(self.streams[pane]))
        self.query_one(f"#scroll-{pane}", VerticalScroll).scroll_end(animate=False)
        elapsed = time.monotonic() - start
        rate = f" · {(self.pieces[pane] - 1) / elapsed:.1f} tok/s" if elapsed > 0.2 and self.pieces[pane] > 1 else ""
        self.query_one(f"#stats-{pane}", Static).update(f"streaming · {self.pieces[pane]} tok{rate}")

    @on(GenerationFinished)
    def _finished(self, msg: GenerationFinished) -> None:
        if msg.run != self.run_no:
            return
        self.running.discard(msg.pane)
        self.outcomes[msg.pane] = msg.outcome
        self.query_one(f"#pane-{msg.pane}").remove_class("running")
        self.show_outcome(msg.pane, msg.outcome)
        self.query_one(f"#pane-{msg.pane}").refresh(layout=True)  # the final state is drawn now, not on a later redraw
        if not self.running:
            self.query_one("#pane-student").border_subtitle = f"comparison {self.comparison_id}"

    def show_outcome(self, pane: str, o: Outcome) -> None:
        stats = self.query_one(f"#stats-{pane}", Static)
        score = self.query_one(f"#score-{pane}", Static)
        score.display = True
        if o.error:
            stats.update(Text("failed", style="red"))
            score.update(Text(o.error, style="red"))
            return
        if o.stopped:
            stats.update(Text("stopped", style="yellow"))
            return
        parts = []
        if o.tokens_per_second is not None:
            parts.append(f"{o.tokens_per_second:.1f} tok/s")
        if o.latency is not None:
            parts.append(f"1st token {o.latency:.2f}s")
        if o.seconds is not None:
            parts.append(f"total {o.seconds:.1f}s")
        if o.tokens is not None:
            parts.append(f"{o.tokens} tok")
        if o.knowledge:
            parts.append(", ".join(f"{n} {k}" for k, n in o.knowledge.items() if n) or "no knowledge fitted")
        stats.update(" · ".join(parts))
        lines = Text()
        for b, hit, label in zip(o.bundles, o.hits, o.labels):
            mark = ("✓ ", "bold green") if hit else ("✗ ", "bold red") if hit is False else ("· ", "")
            lines.append(*mark)
            lines.append(f"{{{', '.join(map(str, sorted(b.items)))}}} ")
            lines.append(b.intent or "", style="italic")
            if label and label != "exact":
                lines.append(f" ({label.replace('_', ' ')})", style="dim")
            lines.append("\n")
        if not o.bundles:
            lines.append("no valid bundle\n", style="red")
        for e in o.errors[:3]:
            lines.append(f"{e}\n", style="dim red")
        lines.append_text(truth_lines(self.session))
        lines.append_text(format_scores(o.scores))
        score.update(lines)

    def action_stop(self) -> None:
        if self.comparing and self.compare_running:
            for w in self.workers:
                if w.group == "arena-compare":
                    w.cancel()
            self.query_one("#compare-status", Static).update(Text("Stopping after the session being answered ...",
                                                                  style="yellow"))
            return
        if not self.running:
            return
        for w in self.workers:
            if w.group == "arena":
                w.cancel()
        self.notify("Stopping ...", title="arena")

    def worker_failed(self, worker) -> None:
        if worker.group == "arena-compare":
            self.compare_running = False
            self.query_one("#compare-status", Static).update(Text(f"failed: {describe_error(worker.error)}",
                                                                  style="red"))
        if worker.group == "arena":
            for pane in list(self.running):
                self.query_one(f"#pane-{pane}").remove_class("running")
                self.query_one(f"#stats-{pane}", Static).update(Text("failed", style="red"))
            self.running.clear()

    # ------------------------------------------------------------ student vs student

    def action_toggle_compare(self) -> None:
        """Switch between one session (teacher and student) and two students over a split."""
        self.comparing = not self.comparing
        self.set_class(self.comparing, "comparing")
        self.query_one("#compare-a" if self.comparing else "#teacher", Select).focus()

    def _compare_choices(self, installed: list[str], datasets: list[str]) -> None:
        """A and B: every installed model, then the baselines a student must beat; the datasets with ground truth."""
        contenders = self.contenders = [*installed, *BASELINES]
        defaults = {"#compare-a": installed[0] if installed else "pairwise",
                    # B: the newest installed model that is not A (a trained student), else the best baseline
                    "#compare-b": next((n for n in reversed(installed[1:])), "pairwise")}
        for sel_id in ("#compare-a", "#compare-b"):
            select = self.query_one(sel_id, Select)
            current = select.value
            select.set_options([(plain(n), n) for n in contenders])
            select.value = current if current in contenders else defaults[sel_id]
        if self.query_one("#compare-a", Select).value == self.query_one("#compare-b", Select).value:
            self.query_one("#compare-b", Select).value = next(n for n in contenders if n != defaults["#compare-a"])
        select = self.query_one("#compare-dataset", Select)
        current = select.value
        self.datasets = list(datasets)
        select.set_options([(plain(d), d) for d in datasets])
        if current in datasets:
            select.value = current
        elif datasets:
            select.value = datasets[0]

    def compare_settings(self) -> tuple[str | None, str | None, EvalConfig | None, str | None]:
        """(A, B, the shared evaluation config, why it cannot run) from the controls."""
        def val(sel: str) -> str | None:
            v = self.query_one(sel, Select).value
            return None if v is Select.NULL else str(v)

        a, b, dataset = val("#compare-a"), val("#compare-b"), val("#compare-dataset")
        if not a or not b:
            return a, b, None, "Pick two students, A and B."
        if not dataset:
            return a, b, None, "No dataset with ground truth: import one (or load the demo on the Sessions screen)."
        text = self.query_one("#compare-limit", Input).value.strip()
        limit = int(text) if text.lstrip("-").isdigit() else None
        if limit is not None and limit < 1:
            return a, b, None, "Sessions: a number of at least 1, or empty for the whole split."
        cfg = self.settings()
        # One process in the app (no worker processes spawned from its thread); the answers are the same.
        base = EvalConfig(dataset, split=val("#compare-split") or "test", limit=limit,
                          utilization=cfg["utilization"] or "zero-shot", knowledge_set=cfg["knowledge_set"], workers=1)
        return a, b, base, None

    def start_compare(self) -> None:
        if self.compare_running:
            self.notify("A comparison is running; escape stops it.", severity="warning")
            return
        if self.running:  # two models answering at once on a small CPU only halve each other's speed
            self.notify("The teacher and student are still answering (c goes back to them; escape stops them).",
                        severity="warning")
            return
        a, b, base, problem = self.compare_settings()
        if problem:
            self.notify(problem, severity="warning", markup=False)
            return
        self.compare_run += 1
        self.compare_running = True
        self.compare_result = None
        self.query_one("#compare-table", DataTable).clear()
        self.query_one("#compare-summary", Static).update("")
        self.query_one("#compare-status", Static).update(Text(f"A {a} and B {b}: reading stored answers ...",
                                                              style="bold"))
        self.compare_students(a, b, base, self.compare_run)

    @work(thread=True, group="arena-compare", description="Comparing students", exclusive=True, exit_on_error=False)
    def compare_students(self, a: str, b: str, base: EvalConfig, run: int) -> None:
        from ..engine.evaluation.versus import compare

        worker = get_current_worker()
        try:
            result = compare(self.app.db(), a, b, base, should_stop=lambda: worker.is_cancelled,
                             progress=lambda side, done, total: self.post_message(CompareProgress(run, side, done, total)))
        except EvalStopped as exc:
            self.post_message(CompareFinished(run, None, str(exc)))
            return
        self.post_message(CompareFinished(run, result))

    @on(CompareProgress)
    def _compare_progress(self, msg: CompareProgress) -> None:
        if msg.run != self.compare_run or not self.compare_running:
            return
        a, b = self.query_one("#compare-a", Select).value, self.query_one("#compare-b", Select).value
        which = "A" if msg.side == a else "B" if msg.side == b else ""
        rest = " · then B" if which == "A" and a != b else ""
        self.query_one("#compare-status", Static).update(Text.assemble(
            (f"{which} {msg.side}".strip(), "bold"), f": {msg.done}/{msg.total} sessions answered{rest} · escape stops"))

    @on(CompareFinished)
    def _compare_finished(self, msg: CompareFinished) -> None:
        if msg.run != self.compare_run:
            return
        self.compare_running = False
        status = self.query_one("#compare-status", Static)
        if msg.result is None:
            status.update(Text(f"stopped: {msg.note or ''} (what was answered is kept)", style="yellow"))
            return
        self.show_comparison(msg.result)

    def show_comparison(self, result: dict[str, Any]) -> None:
        from ..engine.evaluation.versus import summary

        self.compare_result = result
        f1, p = metric("strict_f1"), metric("strict_precision")
        table = self.query_one("#compare-table", DataTable)
        table.clear()
        # Where they differ most first: B better at the top, A better at the bottom (ties in split order).
        for r in sorted(result["per_session"], key=lambda r: -r["diff"][f1.key]):
            d = r["diff"][f1.key]
            table.add_row(plain(r["source_id"] or r["session_id"]), str(r["products"]), f1.fmt(r["a"][f1.key]),
                          f1.fmt(r["b"][f1.key]),
                          Text(f"{d:+.3f}", style="green" if d > 0 else "red" if d < 0 else "dim"),
                          p.fmt(r["a"][p.key]), p.fmt(r["b"][p.key]), key=str(r["session_id"]))
        sides = []
        for key in ("a", "b"):
            side = result[key]
            how = "stored answers" if side["reused"] else "answered now"
            if side.get("utilization") not in (None, "zero-shot"):
                how = f"{side['utilization']}{' with ' + side['knowledge_set'] if side.get('knowledge_set') else ''}, {how}"
            sides.append(f"{key.upper()} {side['name']} {f1.header} {f1.fmt(side['metrics'][f1.key])} "
                         f"(eval run {side['eval_run_id']}, {how})")
        self.query_one("#compare-status", Static).update(Text(
            f"{result['sessions']} sessions of {result['dataset']}/{result['split']}, B − A largest first · "
            + " · ".join(sides)))
        line = summary(result)
        f1_interval = result["intervals"][f1.key]
        style = "bold green" if f1_interval["significant"] and f1_interval["diff"] > 0 else \
            "bold red" if f1_interval["significant"] else "bold"
        self.query_one("#compare-summary", Static).update(Text(line, style=style))

    @on(DataTable.RowSelected, "#compare-table")
    def _open_compared_session(self, event: DataTable.RowSelected) -> None:
        """enter on a session: back to the one-session view with that session, A and B in the two panes where both
        are models (a baseline has no pane: that pane keeps its model)."""
        if not (event.row_key.value and event.row_key.value.isdigit()):
            return
        if self.compare_result:
            for sel_id, key in (("#teacher", "a"), ("#student", "b")):
                side = self.compare_result[key]
                select = self.query_one(sel_id, Select)
                if side["method"] == "llm" and side["name"] in self.installed:
                    select.value = side["name"]
        self.action_toggle_compare()
        self.load_session(int(event.row_key.value))

    # ------------------------------------------------------------ settings in place

    def _cycle(self, sel_id: str, values: list[str]) -> None:
        if not values:
            return
        select = self.query_one(sel_id, Select)
        cur = select.value
        select.value = values[(values.index(cur) + 1) % len(values)] if cur in values else values[0]

    def action_cycle_utilization(self) -> None:
        self._cycle("#utilization", list(UTILIZATIONS))
        self.notify(utilization_hint(self.settings()), title="student", markup=False)

    def action_cycle_kset(self) -> None:
        values = self.knowledge_sets
        if not values:
            self.notify("No knowledge sets yet (Knowledge screen, or `kdbundle knowledge set create`).",
                        severity="warning", markup=False)
            return
        self._cycle("#kset", values)

    def action_pick(self) -> None:
        self.app.push_screen(PickSessionScreen(), lambda sid: self.load_session(sid) if sid else None)

    def action_type_products(self) -> None:
        box = self.query_one("#arena-products", Input)
        box.add_class("visible")
        box.focus()

    @on(Input.Submitted, "#arena-products")
    def _typed(self, event: Input.Submitted) -> None:
        titles = split_products(event.value)
        if len(titles) < 2:
            self.notify(f"Type at least two products, separated by {PRODUCT_SEPARATOR}", severity="warning")
            return
        event.input.remove_class("visible")
        self._session_asked = None  # a read of an earlier pick still under way is not shown over what was typed
        self.set_session(Session(id=None, products=[Product(item_id=0, title=t) for t in titles]))


COMPARE_HINT = ("Student vs student: pick A and B (models or baselines), a dataset, its split and how many sessions "
                "(empty: all), then ctrl+r. Stored answers are reused; c goes back to one session.")


def teacher_hint(chosen: str | None, student: str | None = None) -> str:
    """What the teacher pane says where the default teacher is not installed."""
    if chosen and chosen == student:
        now = f"You picked the student, {chosen}, as the teacher too: both panes show one model."
    elif chosen:
        now = f"Teaching with {chosen} instead (pick another above)."
    else:
        now = "No other model can stand in for it: the student is never used as its own teacher."
    return (f"The default teacher, {DEFAULT_TEACHER}, is not installed. {now} Press p to pull it "
            f"(about 1.1 GB, with a progress bar on the Models screen), or run `kdbundle models pull {DEFAULT_TEACHER}`.")


def utilization_hint(cfg: dict[str, Any]) -> str:
    """What the chosen utilization means for the next run, in one line."""
    u = cfg.get("utilization") or "zero-shot"
    text = f"student utilization: {u}"
    if u in WITH_KNOWLEDGE:
        text += f" with knowledge set {cfg['knowledge_set']}" if cfg.get("knowledge_set") else \
            " (needs a knowledge set: k picks one)"
    if u in FINE_TUNED:
        text += "; pick a fine-tuned student (exported from a training run) as the student model"
    return text


class PickSessionScreen(WorkerErrors, ModalScreen[int | None]):
    """Type a session: its store id, or dataset:source-id."""

    NOTIFY_WORKER_ERRORS = False  # said under the field, which stays open for another try

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Session id (as on the Sessions screen: dataset:source id, or the number)",
                        classes="dialog-question")
            yield Input(placeholder="electronic:232", id="pick")
            yield Static("", id="pick-error", classes="error-line")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.resolve(event.value.strip())

    @work(thread=True, exit_on_error=False)
    def resolve(self, text: str) -> None:
        self.post_message(SessionResolved(browse.resolve_session(self.app.db(), text)))

    @on(SessionResolved)
    def _resolved(self, msg: SessionResolved) -> None:
        self.dismiss(msg.session_id)

    def worker_failed(self, worker) -> None:
        self.query_one("#pick-error", Static).update(str(worker.error))
