"""Knowledge: patterns (sortable), rules (ranked, with provenance), thoughts (Markdown), knowledge sets."""
from __future__ import annotations

import json

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Markdown, Select, Static, TabbedContent, TabPane

from ..engine import browse
from ..engine.knowledge.formats import FORMATS
from .base import KdScreen, WorkerErrors, plain
from .messages import DataChanged, DatasetsLoaded, KnowledgeLoaded, KnowledgeSetsLoaded, PatternsMined, ProvenanceLoaded

# The formats this screen has a tab for (a format added to the table shows up in `knowledge list` first).
FILLERS = ("pattern", "rule", "thought")
KINDS = tuple(f.record_kind for f in FORMATS if f.record_kind in FILLERS)
PATTERN_SORTS = ("support", "confidence", "itemset")


def pattern_itemset(row: browse.KnowledgeRow) -> list[str]:
    items = row.data.get("itemset") or row.data.get("categories") or []
    return [str(x) for x in items]


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class KnowledgeScreen(KdScreen):
    MODE = "knowledge"
    BINDINGS = [
        Binding("m", "mine", "Mine"),
        Binding("o", "sort", "Sort"),
        Binding("p", "provenance", "Sources"),
        Binding("f", "cycle_status", "Status"),
        Binding("r", "reload", "Reload", show=False),
        # Review keys stay out of the footer (at 60 columns it would push out `? Help`); help lists them.
        Binding("a", "review('accept')", "Accept", show=False),
        Binding("x", "review('reject')", "Reject", show=False),
        Binding("e", "review('edit')", "Edit", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[browse.KnowledgeRow]] = {k: [] for k in KINDS}
        self.sort_by = "support"
        self.thought_status = ""  # "" = all, accepted, rejected
        self.loaded: set[str] = set()  # kinds (and "sets") read for the current dataset
        self._keep_row: dict[str, int] = {}  # kind -> row to highlight again after a review reloads it

    def compose(self) -> ComposeResult:
        yield from self.compose_nav()
        with Horizontal(classes="controls"):
            yield Select([], prompt="dataset", id="k-dataset", allow_blank=True, compact=True)
            yield Static("", id="k-summary", classes="summary-inline")
        with TabbedContent(id="k-tabs", initial="tab-patterns"):
            with TabPane("Patterns", id="tab-patterns"):
                yield DataTable(id="patterns", cursor_type="row", zebra_stripes=True)
            with TabPane("Rules", id="tab-rules"):
                with Vertical():
                    yield DataTable(id="rules", cursor_type="row", zebra_stripes=True)
                    yield Static("", id="rule-text", classes="detail-line")
            with TabPane("Thoughts", id="tab-thoughts"):
                with Horizontal():
                    yield DataTable(id="thoughts", cursor_type="row")
                    with VerticalScroll(id="thought-view"):
                        yield Markdown("", id="thought-md")
            with TabPane("Sets", id="tab-sets"):
                yield DataTable(id="sets", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # The wide text column goes last: at 80 columns it is cut, not the numbers.
        self.query_one("#patterns", DataTable).add_columns("support", "conf.", "len", "itemset (leaf categories)")
        self.query_one("#rules", DataTable).add_columns("rank", "sessions", "teacher", "rule")
        self.query_one("#thoughts", DataTable).add_columns("session", "status")
        self.query_one("#sets", DataTable).add_columns("name", "formats", "datasets", "sampling", "members")
        self.query_one("#patterns", DataTable).focus()
        self.load_datasets()

    @on(DataChanged)
    def _data_changed(self, msg: DataChanged) -> None:
        """Another process changed the database: re-read what this screen picks from, and its records."""
        self.load_datasets()
        self.action_reload()

    def on_screen_resume(self) -> None:
        self.load_datasets()

    @property
    def dataset(self) -> str | None:
        value = self.query_one("#k-dataset", Select).value
        return None if value is Select.NULL else str(value)

    # ------------------------------------------------------------ workers

    @work(thread=True, group="knowledge", description="Reading datasets", exclusive=True, exit_on_error=False)
    def load_datasets(self) -> None:
        self.post_message(DatasetsLoaded(browse.dataset_summaries(self.app.db())))

    @work(thread=True, group="knowledge-rows", description="Reading knowledge", exit_on_error=False)
    def load_kind(self, dataset: str, kind: str) -> None:
        rows = browse.knowledge_list(self.app.db(), dataset=dataset, kind=kind)
        self.post_message(KnowledgeLoaded(dataset, kind, rows))

    @work(thread=True, group="knowledge-sets", description="Reading knowledge sets", exit_on_error=False)
    def load_sets(self) -> None:
        self.post_message(KnowledgeSetsLoaded(browse.knowledge_sets(self.app.db())))

    @work(thread=True, group="mine", description="Mining patterns", exclusive=True, exit_on_error=False)
    def mine(self, dataset: str) -> None:
        from ..engine.knowledge.patterns import MineConfig, mine

        result = mine(self.app.db(), MineConfig(dataset))
        self.post_message(PatternsMined(dataset, result.patterns, result.seconds))

    # ------------------------------------------------------------ handlers

    @on(DatasetsLoaded)
    def _datasets(self, msg: DatasetsLoaded) -> None:
        select = self.query_one("#k-dataset", Select)
        current = select.value
        names = [d.name for d in msg.datasets]
        select.set_options([(plain(n), n) for n in names])
        if names:
            select.value = current if current in names else names[0]
        self.load_sets()

    @on(Select.Changed, "#k-dataset")
    def action_reload(self) -> None:
        self.loaded.clear()
        if self.dataset:
            for kind in KINDS:
                self.load_kind(self.dataset, kind)
        self.load_sets()

    @on(KnowledgeLoaded)
    def _loaded(self, msg: KnowledgeLoaded) -> None:
        if msg.dataset != self.dataset:
            return
        self.rows[msg.kind] = msg.rows
        self.loaded.add(msg.kind)
        dict(zip(FILLERS, (self._fill_patterns, self._fill_rules, self._fill_thoughts)))[msg.kind]()
        self._summary()

    def _summary(self) -> None:
        n = {k: len(v) for k, v in self.rows.items()}
        patterns = f"{n['pattern']} patterns by {self.sort_by}" if n["pattern"] else "no patterns (m mines)"
        thoughts = f"{n['thought']} thoughts" + (f" ({self.thought_status} shown)" if self.thought_status else "")
        self.query_one("#k-summary", Static).update(f"{patterns} · {n['rule']} rules · {thoughts}")

    def _fill_patterns(self) -> None:
        table = self.query_one("#patterns", DataTable)
        table.clear()
        rows = list(self.rows["pattern"])
        if self.sort_by == "itemset":
            rows.sort(key=lambda r: " + ".join(pattern_itemset(r)).lower())
        else:
            rows.sort(key=lambda r: -_num(r.data.get(self.sort_by)))
        for r in rows:
            items = pattern_itemset(r)
            conf = r.data.get("confidence")
            table.add_row(
                f"{_num(r.data.get('support')):.4f}", "-" if conf is None else f"{_num(conf):.3f}", str(len(items)),
                Text(" + ".join(items) or r.text), key=str(r.id),
            )
        self._summary()

    def _fill_rules(self) -> None:
        table = self.query_one("#rules", DataTable)
        table.clear()
        for r in self.rows["rule"]:
            if r.superseded_by is not None or r.status != "accepted" and r.review:
                continue  # replaced or rejected in review: the review's record stands for it
            text = Text(f"✓{r.review[0]} " if r.review else "", style="green") + Text(r.text.replace("\n", " "))
            table.add_row(str(r.rank or "-"), str(r.sessions), Text(r.teacher or "-"), text, key=str(r.id))
        self._restore_row("rule", table)
        if not self.rows["rule"]:
            self.query_one("#rule-text", Static).update(Text(
                f"No rules for {self.dataset or 'this dataset'}: a teacher distils them (a distill-rules job: "
                "Jobs screen 3, then n). The demo's demo-electronic has 12 (load the demo: d on Sessions)."
            ))

    def _fill_thoughts(self) -> None:
        table = self.query_one("#thoughts", DataTable)
        table.clear()
        shown = [r for r in self.rows["thought"] if r.superseded_by is None
                 and (not self.thought_status or r.status == self.thought_status)]
        for r in shown:
            sid = r.first_session or f"#{r.id}"
            style = "green" if r.status == "accepted" else "red"
            table.add_row(Text(str(sid)), Text(r.status + (" ✓" if r.review else ""), style=style), key=str(r.id))
        self._restore_row("thought", table)
        self._summary()
        if not shown:
            which = f"{self.thought_status} " if self.thought_status and self.rows["thought"] else ""
            self.query_one("#thought-md", Markdown).update(
                f"No {which}thoughts for {self.dataset or 'this dataset'}: a teacher distils them (a *distill-thoughts* "
                "job: Jobs screen `3`, then `n`). The demo's *demo-electronic* has some (load the demo: `d` on Sessions)."
            )

    @on(KnowledgeSetsLoaded)
    def _sets(self, msg: KnowledgeSetsLoaded) -> None:
        self.loaded.add("sets")
        table = self.query_one("#sets", DataTable)
        table.clear()
        for s in msg.sets:
            spec = s.spec
            sampling = " ".join(
                str(x) for x in (spec.get("strategy") or spec.get("sample"), spec.get("ratio"), spec.get("seed"))
                if x is not None
            )
            members = ", ".join(f"{n} {k}" for k, n in sorted(s.counts.items())) or "empty"
            table.add_row(Text(s.name), Text(",".join(spec.get("formats", []))), Text(",".join(spec.get("datasets", []))),
                          Text(sampling or "all"), Text(members), key=str(s.id))

    @on(DataTable.RowHighlighted, "#rules")
    def _rule(self, event: DataTable.RowHighlighted) -> None:
        rec = self._record("rule", event.row_key.value)
        if rec:
            self.query_one("#rule-text", Static).update(
                Text.assemble((f"#{rec.rank or '-'} ", "bold"), rec.text, (f"  ({rec.sessions} source sessions; p: sources)", "dim"))
            )

    @on(DataTable.RowHighlighted, "#thoughts")
    def _thought(self, event: DataTable.RowHighlighted) -> None:
        rec = self._record("thought", event.row_key.value)
        if rec:
            self.query_one("#thought-md", Markdown).update(thought_markdown(rec))

    def _restore_row(self, kind: str, table: DataTable) -> None:
        if kind in self._keep_row and table.row_count:
            table.move_cursor(row=min(self._keep_row.pop(kind), table.row_count - 1))

    # ------------------------------------------------------------ review (a: accept, x: reject, e: edit)

    def _highlighted_record(self) -> tuple[str, browse.KnowledgeRow, int] | None:
        active = self.query_one("#k-tabs", TabbedContent).active
        kind = {"tab-rules": "rule", "tab-thoughts": "thought"}.get(active)
        table = self.query_one(f"#{kind}s", DataTable) if kind else None
        if table is None or not table.row_count:
            return None
        rec = self._record(kind, table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return (kind, rec, table.cursor_row) if rec else None

    def action_review(self, action: str) -> None:
        found = self._highlighted_record()
        if found is None:
            self.notify("Reviews are of rules and thoughts: highlight one on the Rules or Thoughts tab.",
                        severity="warning")
            return
        kind, rec, row = found
        if action == "edit":
            self.app.push_screen(EditScreen(f"Edit {kind} {rec.id} (enter saves, escape cancels)", rec.text),
                                 lambda text: self.review(kind, rec.id, "edit", text, row) if text else None)
        else:
            self.review(kind, rec.id, action, None, row)

    @work(thread=True, group="knowledge-review", description="Reviewing a record", exit_on_error=False)
    def review(self, kind: str, knowledge_id: int, action: str, text: str | None, row: int) -> None:
        from ..engine.knowledge.review import review_record

        try:
            out = review_record(self.app.db(), knowledge_id, action, text=text)
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", title="review")
            return

        def done() -> None:
            self.notify(f"{kind} {knowledge_id} {out['review']} by {out['reviewer']}: record {out['id']} replaces it",
                        title="review")
            # the next record: a rule keeps its rank (and its row) unless rejected; a thought's review moves it last
            self._keep_row[kind] = row + 1 if kind == "rule" and action != "reject" else row
            if self.dataset:
                self.load_kind(self.dataset, kind)

        self.app.call_from_thread(done)

    def _record(self, kind: str, key: str | None) -> browse.KnowledgeRow | None:
        return next((r for r in self.rows[kind] if str(r.id) == key), None)

    @on(PatternsMined)
    def _mined(self, msg: PatternsMined) -> None:
        self.notify(f"{msg.count} patterns mined from {msg.dataset} in {msg.seconds:.1f}s", title="patterns")
        self.query_one("#k-tabs", TabbedContent).active = "tab-patterns"
        self.load_kind(msg.dataset, "pattern")

    # ------------------------------------------------------------ actions

    def action_mine(self) -> None:
        if not self.dataset:
            self.notify("No dataset to mine.", severity="warning")
            return
        self.notify(f"Mining category patterns in {self.dataset} ...", title="patterns")
        self.mine(self.dataset)

    def action_sort(self) -> None:
        self.sort_by = PATTERN_SORTS[(PATTERN_SORTS.index(self.sort_by) + 1) % len(PATTERN_SORTS)]
        self.query_one("#k-tabs", TabbedContent).active = "tab-patterns"
        self._fill_patterns()

    @on(DataTable.HeaderSelected, "#patterns")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by = {0: "support", 1: "confidence", 3: "itemset"}.get(event.column_index, self.sort_by)
        self._fill_patterns()

    def action_cycle_status(self) -> None:
        order = ["", "accepted", "rejected"]
        self.thought_status = order[(order.index(self.thought_status) + 1) % len(order)]
        self.query_one("#k-tabs", TabbedContent).active = "tab-thoughts"
        self._fill_thoughts()

    @on(DataTable.RowSelected, "#patterns, #rules, #thoughts")
    def _selected(self) -> None:
        self.action_provenance()

    def action_provenance(self) -> None:
        active = self.query_one("#k-tabs", TabbedContent).active
        table_id = {"tab-rules": "#rules", "tab-thoughts": "#thoughts", "tab-patterns": "#patterns"}.get(active)
        if not table_id:
            return
        table = self.query_one(table_id, DataTable)
        if not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self.app.push_screen(ProvenanceScreen(int(key)))


def _bundle_lines(bundles) -> list[str]:
    out = []
    for b in bundles or []:
        if isinstance(b, dict):
            items = ", ".join(str(i) for i in b.get("items", []))
            out.append(f"- {{{items}}} {b.get('intent') or ''}".rstrip())
    return out


def thought_markdown(rec: browse.KnowledgeRow) -> str:
    """A thought as the Thoughts tab shows it: verdict, reasoning, answer next to the ground truth."""
    head = f"**session {rec.first_session or '?'}** · {rec.teacher or '?'} · **{rec.status}**"
    if rec.reason:
        head += f": {rec.reason}"
    parts = [head, "", rec.text]
    answer = _bundle_lines(rec.data.get("answer"))
    truth = _bundle_lines(rec.data.get("ground_truth"))
    if answer:
        parts += ["", "**Answer**", *answer]
    if truth:
        parts += ["", "**Ground truth**", *truth]
    return "\n".join(parts)


class EditScreen(ModalScreen[str | None]):
    """One line of text to edit (a rule's or a thought's new text); dismisses with it, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, text: str) -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.text = question, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.question, classes="dialog-question", markup=False)
            yield Input(self.text, id="edit-text")
        yield Footer(compact=True)

    @on(Input.Submitted)
    def _save(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class ProvenanceScreen(WorkerErrors, ModalScreen[None]):
    """A knowledge record with the sessions and teacher outputs it came from."""

    NOTIFY_WORKER_ERRORS = False  # said in place of the sources

    BINDINGS = [Binding("escape,q,p", "dismiss", "Close")]

    def __init__(self, knowledge_id: int) -> None:
        super().__init__(classes="dialog-screen")
        self.knowledge_id = knowledge_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Markdown("Loading ...", id="prov-md")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, description="Reading provenance", exit_on_error=False)
    def load(self) -> None:
        prov = browse.knowledge_provenance(self.app.db(), self.knowledge_id)
        self.post_message(ProvenanceLoaded(provenance_markdown(prov)))

    @on(ProvenanceLoaded)
    async def _loaded(self, msg: ProvenanceLoaded) -> None:
        await self.query_one("#prov-md", Markdown).update(msg.markdown)

    def worker_failed(self, worker) -> None:
        self.query_one("#prov-md", Markdown).update(f"Could not read sources: {worker.error}")


def provenance_markdown(prov: browse.Provenance) -> str:
    r = prov.record
    lines = [f"## {r.kind} #{r.id} ({r.dataset}, {r.status})", "", r.text, ""]
    if r.reason:
        lines += [f"*Rejected:* {r.reason}", ""]
    if r.data:
        lines += ["```json", json.dumps(r.data, ensure_ascii=False)[:1500], "```", ""]
    lines.append(f"### Source sessions ({len(prov.sessions)})")
    lines.append(", ".join(f"{src} ({split or '-'})" for _, src, split in prov.sessions) or "none recorded")
    lines.append("")
    lines.append(f"### Teacher outputs ({len(prov.generations)})")
    for g in prov.generations:
        lines += ["", f"**generation {g.id}** · {g.model} · {g.purpose}", "", "```", g.raw_output[:3000], "```"]
    if not prov.generations:
        lines.append("none (mined from data)" if r.kind == "pattern" else "none recorded")
    return "\n".join(lines)
