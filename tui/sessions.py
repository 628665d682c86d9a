"""Sessions: datasets -> sessions (split, size, bundles; filter) -> one session's products and bundles."""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, Select, Static

from ..engine import browse
from .base import ConfirmScreen, KdScreen, plain
from .messages import DataChanged, DatasetsLoaded, OpenInArena, SessionLoaded, SessionsLoaded

# One colour per ground-truth bundle of a session (wraps after six).
BUNDLE_COLOURS = ("green", "magenta", "cyan", "yellow", "blue", "red")
SPLIT_OPTIONS = [("all splits", ""), ("train", "train"), ("valid", "valid"), ("test", "test")]


def bundle_tag(index: int) -> Text:
    return Text(f"B{index + 1}", style=f"bold {BUNDLE_COLOURS[index % len(BUNDLE_COLOURS)]}")


class SessionsScreen(KdScreen):
    MODE = "sessions"
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("s", "cycle_split", "Split"),
        Binding("a", "to_arena", "Arena"),
        Binding("d", "load_demo", "Demo data", show=False),
        Binding("escape", "focus_sessions", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.datasets: list[browse.DatasetSummary] = []
        self.detail: browse.SessionDetail | None = None
        self._query_seq = 0  # drops results of filters the user has already typed past
        self._offered_demo = False

    def compose(self) -> ComposeResult:
        yield from self.compose_nav()
        with Horizontal(id="sessions-controls", classes="controls"):
            yield Select([], prompt="dataset", id="dataset", allow_blank=True, compact=True)
            yield Select(SPLIT_OPTIONS, value="", id="split", allow_blank=False, compact=True)
            yield Input(placeholder="filter: title, category or id", id="filter", compact=True)
        yield Static("", id="dataset-summary", classes="summary")
        with Horizontal(id="sessions-body"):
            yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
            with Vertical(id="session-detail"):
                yield Static("Pick a session on the left.", id="session-title", classes="pane-title")
                yield DataTable(id="products", cursor_type="row")
                yield Static("", id="session-bundles")
        yield Footer(compact=True)

    @on(DataChanged)
    def _data_changed(self, msg: DataChanged) -> None:
        """Another process changed the database: re-read what this screen picks from."""
        self.load_datasets()

    def on_mount(self) -> None:
        table = self.query_one("#sessions", DataTable)
        table.add_column("session", key="session", width=7)
        table.add_column("split", key="split", width=5)
        table.add_column("prod", key="n", width=4)
        table.add_column("bnd", key="b", width=3)
        products = self.query_one("#products", DataTable)
        products.add_column("#", key="pos", width=2)
        products.add_column("in", key="in", width=5)
        products.add_column("product / category", key="product", width=100)
        table.focus()
        self.load_datasets()

    # ------------------------------------------------------------ workers (DB reads in threads)

    @work(thread=True, group="sessions", description="Reading datasets", exclusive=True, exit_on_error=False)
    def load_datasets(self) -> None:
        self.post_message(DatasetsLoaded(browse.dataset_summaries(self.app.db())))

    @work(thread=True, group="sessions-list", description="Reading sessions", exclusive=True, exit_on_error=False)
    def load_sessions(self, dataset: str, split: str, query: str, seq: int) -> None:
        page = browse.list_sessions(self.app.db(), dataset, split=split or None, query=query)
        if seq == self._query_seq:
            self.post_message(SessionsLoaded(dataset, page))

    @work(thread=True, group="session-detail", description="Reading session", exclusive=True, exit_on_error=False)
    def load_detail(self, session_id: int) -> None:
        self.post_message(SessionLoaded(browse.session_detail(self.app.db(), session_id)))

    @work(thread=True, group="demo", description="Loading the demo dataset", exit_on_error=False)
    def load_demo(self) -> None:
        from ..engine.knowledge.demo import load_demo

        loaded = load_demo(self.app.db())  # refuses, in one line, if it is all there already
        self.app.notify(f"Loaded {', '.join(loaded)}: sessions, mined patterns, and on demo-electronic the rules "
                        "and thoughts a teacher distilled.", title="data")
        self.load_datasets()

    # ------------------------------------------------------------ handlers

    @on(DatasetsLoaded)
    def _datasets(self, msg: DatasetsLoaded) -> None:
        self.datasets = msg.datasets
        select = self.query_one("#dataset", Select)
        current = select.value
        select.set_options([(plain(f"{d.name} ({d.sessions})"), d.name) for d in msg.datasets])
        names = [d.name for d in msg.datasets]
        if names:
            select.value = current if current in names else names[0]
        elif not self._offered_demo:
            self._offered_demo = True
            self.query_one("#dataset-summary", Static).update(
                "No data yet. Press d to load the built-in demo dataset, or run `kdbundle data import`."
            )
            self.app.push_screen(
                ConfirmScreen("No datasets yet. Load the built-in demo dataset?", yes="Load demo", no="Not now"),
                lambda ok: self.load_demo() if ok else None,
            )

    @on(Select.Changed, "#dataset")
    @on(Select.Changed, "#split")
    @on(Input.Changed, "#filter")
    def _refilter(self) -> None:
        dataset = self.query_one("#dataset", Select).value
        if dataset is Select.NULL:
            return
        summary = next((d for d in self.datasets if d.name == dataset), None)
        if summary:
            sp = summary.splits
            self.query_one("#dataset-summary", Static).update(
                f"{summary.sessions} sessions · {summary.bundles} bundles · {summary.items} items · "
                f"train {sp['train']} / valid {sp['valid']} / test {sp['test']}"
            )
        self._query_seq += 1
        split = self.query_one("#split", Select).value
        self.load_sessions(str(dataset), str(split or ""), self.query_one("#filter", Input).value, self._query_seq)

    @on(SessionsLoaded)
    def _sessions(self, msg: SessionsLoaded) -> None:
        table = self.query_one("#sessions", DataTable)
        table.clear()
        for r in msg.page.rows:
            table.add_row(Text(r.source_id), r.split or "-", str(r.n_items), str(r.n_bundles), key=str(r.id))
        shown = len(msg.page.rows)
        table.border_subtitle = (f"{shown} of {msg.page.total}: / filters, the split picker narrows" if shown < msg.page.total
                                 else f"{shown} sessions")
        if not msg.page.rows:
            self._show_detail(None)

    @on(DataTable.RowHighlighted, "#sessions")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.load_detail(int(event.row_key.value))

    @on(DataTable.RowSelected, "#sessions")
    def _selected(self) -> None:
        self.query_one("#products", DataTable).focus()

    @on(SessionLoaded)
    def _detail(self, msg: SessionLoaded) -> None:
        # A read that finishes after the list changed (another dataset, a failed read) or after the cursor moved on
        # (a cancelled thread worker still runs to its end, maybe after the newer one) is stale.
        table = self.query_one("#sessions", DataTable)
        if msg.detail is not None and (not table.row_count or str(msg.detail.session.id)
                                       != table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value):
            return
        self._show_detail(msg.detail)

    def _show_detail(self, detail: browse.SessionDetail | None) -> None:
        self.detail = detail
        title = self.query_one("#session-title", Static)
        products = self.query_one("#products", DataTable)
        bundles_view = self.query_one("#session-bundles", Static)
        products.clear()
        if detail is None:
            title.update("No session matches.")
            bundles_view.update("")
            return
        s = detail.session
        title.update(Text.assemble(
            (f"session {s.source_id}", "bold"), f" · {s.split or 'no split'} · {s.n} products · "
            f"{len(s.bundles)} bundle{'s' if len(s.bundles) != 1 else ''}"
        ))
        for pos, p in enumerate(s.products, start=1):
            tags = Text(" ").join(bundle_tag(i) for i, b in enumerate(s.bundles) if pos in b.items)
            cell = Text(p.title, no_wrap=True, overflow="ellipsis")
            cell.append("\n" + (" › ".join(p.category_path[-2:]) or p.category or "-"), style="dim")
            products.add_row(str(pos), tags, cell, key=str(pos), height=2)
        lines = Text()
        for i, b in enumerate(s.bundles):
            lines.append_text(bundle_tag(i))
            lines.append(f" {{{', '.join(map(str, sorted(b.items)))}}} ")
            lines.append(b.intent or "(no intent)", style="italic")
            lines.append("\n")
        if not s.bundles:
            lines.append("No ground-truth bundles in this session.\n", style="dim")
        for d in detail.dropped:
            lines.append(f"dropped ({d.reason}) {{{', '.join(map(str, sorted(d.items)))}}} {d.intent}\n", style="dim")
        bundles_view.update(lines)

    def worker_failed(self, worker) -> None:
        # A failed read (a damaged database, say) must not leave the previous dataset's rows on
        # screen as if they were the answer: clear the list and the detail, and say what happened.
        if worker.group in ("sessions", "sessions-list", "session-detail"):
            table = self.query_one("#sessions", DataTable)
            table.clear()
            table.border_subtitle = "could not read"
            self._show_detail(None)
            self.query_one("#session-title", Static).update(Text("Could not read the database (see the message).",
                                                                  style="red"))

    # ------------------------------------------------------------ actions

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_sessions(self) -> None:
        self.query_one("#sessions", DataTable).focus()

    def action_cycle_split(self) -> None:
        select = self.query_one("#split", Select)
        values = [v for _, v in SPLIT_OPTIONS]
        select.value = values[(values.index(select.value) + 1) % len(values)]

    def action_to_arena(self) -> None:
        if self.detail is None:
            self.notify("Pick a session first.", severity="warning")
            return
        self.app.post_message(OpenInArena(self.detail.session.id))

    def action_load_demo(self) -> None:
        self.load_demo()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.action_focus_sessions()
