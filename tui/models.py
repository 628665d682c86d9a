"""Models: the registry (installed or not, size, quant, source, the run a student came from);
pull with a progress bar, export a run's student, delete with confirmation, prune finished training runs."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, ProgressBar, Static

from .base import ConfirmScreen, KdScreen
from .launch import LaunchScreen
from .messages import DataChanged, ModelDeleted, ModelPulled, ModelsLoaded, PullProgress, RunsPruned


def human_size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def model_rows(db) -> list[dict[str, Any]]:
    from ..engine.llm import registry

    rows = []
    models = registry.list_models(db)
    served = registry.served_student(db, models)
    for m in models:
        row = m.to_dict()
        row["single_file"] = m.builtin and registry.CATALOGUE[m.name].single_file
        row["served"] = m.name == served
        rows.append(row)
    return rows


def delete_question(m: dict[str, Any]) -> str | None:
    """What deleting this model does, as the confirmation question (None: nothing to delete).
    Mirrors registry.delete_model: kdbundle removes only files it made."""
    name, source = m["name"], str(m.get("source") or "")
    if m.get("builtin"):
        if m.get("single_file"):  # the file lives inside its pip package
            return None
        return f"Delete the joined copy of {name} from the cache? Its packages stay; pulling rebuilds it."
    if source.startswith(("hf:", "run:")):
        return f"Delete model {name} and its file (kdbundle made it)?"
    return f"Remove model {name} from the registry? Your file {m.get('path') or ''} stays."


class ModelsScreen(KdScreen):
    MODE = "models"
    BINDINGS = [
        Binding("p", "pull", "Pull"),
        Binding("x", "export", "Export"),
        Binding("delete", "delete", "Delete"),
        Binding("f", "prune", "Free disk"),
        Binding("r", "reload", "Reload", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.models: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield from self.compose_nav()
        yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
        yield Static("", id="model-info")
        yield ProgressBar(id="pull-progress", show_eta=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#models", DataTable)
        for key, label, width in (("name", "name", 22), ("family", "family", 8), ("params", "size", 5),
                                  ("format", "format", 6), ("quant", "quant", 6), ("bytes", "file", 7),
                                  ("installed", "inst.", 5), ("source", "source", None)):
            table.add_column(label, key=key, width=width)
        self.query_one("#pull-progress").display = False

    @on(DataChanged)
    def _data_changed(self, msg: DataChanged) -> None:
        """Another process changed the database: re-read what this screen picks from."""
        self.load()

    def on_screen_resume(self) -> None:
        self.action_reload()

    @work(thread=True, group="models", description="Reading models", exclusive=True, exit_on_error=False)
    def load(self) -> None:
        self.post_message(ModelsLoaded(model_rows(self.app.db())))

    def action_reload(self) -> None:
        self.load()

    @on(ModelsLoaded)
    def _loaded(self, msg: ModelsLoaded) -> None:
        self.models = msg.models
        table = self.query_one("#models", DataTable)
        cursor = table.cursor_row
        table.clear()
        for m in msg.models:
            installed = bool(m.get("installed"))
            table.add_row(
                Text(m["name"], style="bold" if installed else ""), Text(m.get("family") or "-"),
                Text(str(m.get("params") or "-")), Text(m.get("format") or "-"), Text(m.get("quant") or "-"),
                human_size(m.get("size_bytes")), Text("yes" if installed else "no", style="green" if installed else "dim"),
                Text(str(m.get("source") or "-")), key=m["name"],
            )
        if msg.models:
            table.move_cursor(row=min(cursor, len(msg.models) - 1))
        if not any(m.get("installed") for m in msg.models):
            self.query_one("#model-info", Static).update(
                "No model installed yet. Press p on a model (or run `kdbundle models pull smollm2-135m`)."
            )

    def current(self) -> dict[str, Any] | None:
        table = self.query_one("#models", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((m for m in self.models if m["name"] == key), None)

    @on(DataTable.RowHighlighted, "#models")
    def _highlighted(self) -> None:
        m = self.current()
        if m is None:
            return
        lines = Text.assemble((m["name"], "bold"), f"  {m.get('license') or ''}\n")
        if m.get("path"):
            lines.append(f"file: {m['path']}\n", style="dim")
        if m.get("run_id"):
            lines.append(f"trained in run {m['run_id']}" + (f" from {m['base_model']}" if m.get("base_model") else "") + "\n")
            if m.get("served"):
                lines.append("the student served where no model is named (generate, the arena, the evaluation form)\n",
                             style="green")
        if m.get("description"):
            lines.append(f"{m['description']}\n")
        if not m.get("installed") and m.get("pull_command"):
            lines.append(f"not installed: p pulls it (or `{m['pull_command']}`)\n", style="yellow")
        self.query_one("#model-info", Static).update(lines)

    # ------------------------------------------------------------ pull

    def action_pull(self) -> None:
        m = self.current()
        if m is None:
            return
        if m.get("installed"):
            self.notify(f"{m['name']} is already installed.")
            return
        self.pull_named(m["name"])

    def pull_named(self, name: str) -> None:
        """Pull `name` with the progress bar (the arena's p pulls the default teacher so)."""
        bar = self.query_one("#pull-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.notify(f"Pulling {name} ...", title="models")
        self.pull(name)

    @work(thread=True, group="pull", description="Pulling model", exit_on_error=False)
    def pull(self, name: str) -> None:
        def progress(done: int, total: int | None) -> None:
            self.post_message(PullProgress(name, done, total))

        from ..engine.llm import registry

        registry.pull_model(self.app.db(), name, progress=progress)
        self.post_message(ModelPulled(name))

    @on(PullProgress)
    def _progress(self, msg: PullProgress) -> None:
        self.query_one("#pull-progress", ProgressBar).update(total=msg.total, progress=msg.done)

    @on(ModelPulled)
    def _pulled(self, msg: ModelPulled) -> None:
        self.query_one("#pull-progress").display = False
        self.notify(f"{msg.name} installed.", title="models")
        self.load()

    def worker_failed(self, worker) -> None:
        self.query_one("#pull-progress").display = False

    # ------------------------------------------------------------ export, delete

    def action_export(self) -> None:
        m = self.current()
        run_id = m.get("run_id") if m else None
        screen = LaunchScreen("export", {"run_id": str(run_id)} if run_id else None)
        self.app.push_screen(screen, lambda choice: self.app.launch_job(*choice) if choice else None)

    def action_delete(self) -> None:
        m = self.current()
        if m is None:
            return
        question = delete_question(m)
        if question is None:
            self.notify(f"{m['name']} is built in: its file belongs to its pip package, nothing to delete.",
                        severity="warning", markup=False)
            return
        self.app.push_screen(ConfirmScreen(question, yes="Delete", no="Keep"),
                             lambda ok: self.delete(m["name"]) if ok else None)

    @work(thread=True, group="models-delete", description="Deleting model", exit_on_error=False)
    def delete(self, name: str) -> None:
        from ..engine.llm import registry

        registry.delete_model(self.app.db(), name)
        self.post_message(ModelDeleted(name))

    @on(ModelDeleted)
    def _deleted(self, msg: ModelDeleted) -> None:
        self.notify(f"{msg.name} deleted.", title="models")
        self.load()

    # ------------------------------------------------------------ prune (kdbundle runs prune)

    def action_prune(self) -> None:
        """Say what pruning the finished training runs would free, and free it on yes."""
        self.prune_runs(dry_run=True)

    @work(thread=True, group="runs-prune", description="Pruning training runs", exit_on_error=False)
    def prune_runs(self, dry_run: bool) -> None:
        from ..engine.jobs.runs import prune_runs

        self.post_message(RunsPruned(prune_runs(self.app.db(), dry_run=dry_run), dry_run))

    @on(RunsPruned)
    def _pruned(self, msg: RunsPruned) -> None:
        freed = sum(r["freed_bytes"] for r in msg.runs)
        runs = [str(r["run"]) for r in msg.runs if r["removed"]]
        if not freed and not runs:
            self.notify("Nothing to prune: no finished training run keeps checkpoints.", title="runs")
        elif msg.dry_run:
            question = (f"Free {human_size(freed)} of run{'s' if len(runs) > 1 else ''} {', '.join(runs)}: resumable "
                        "checkpoints and validation candidates of finished runs? Their adapters, best weights and "
                        "records stay.")
            self.app.push_screen(ConfirmScreen(question, yes="Prune", no="Keep"),
                                 lambda ok: self.prune_runs(dry_run=False) if ok else None)
        else:
            self.notify(f"Freed {human_size(freed)} (run{'s' if len(runs) > 1 else ''} {', '.join(runs)}).",
                        title="runs", markup=False)
