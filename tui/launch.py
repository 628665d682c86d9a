"""The launch form: pick a job kind, fill its fields (sensible defaults, store-backed choices), launch.

One form per kind in engine.jobs.runner.JOB_KINDS; the field names are the job handler's parameters.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from ..engine import browse, config
from ..engine.evaluation.evaluate import METHODS, SPLITS, UTILIZATIONS, EvalConfig
from ..engine.knowledge.distill import DistillConfig
from ..engine.knowledge.formats import DISTILLED
from ..engine.knowledge.sampling import STRATEGIES
from ..engine.llm.catalogue import DEFAULT_STUDENT, DEFAULT_TEACHER
from ..engine.student.config import FULL_MAX_PARAMS, LR_DEFAULT, PRESETS, RECIPE_DEFAULTS, RECIPES, TrainConfig, recipe_default
from ..engine.student.config import METHODS as TRAIN_METHODS
from ..engine.student.export import ExportConfig
from ..engine.student.gguf_write import QUANTS
from .base import WorkerErrors, plain
from .messages import FormChoicesLoaded


@dataclass(frozen=True)
class FormField:
    name: str
    """The job parameter this field fills."""
    label: str
    default: str = ""
    choices: tuple[str, ...] | None = None
    """Fixed choices (a Select); None for free text."""
    source: str | None = None
    """Choices read from the store: datasets | models | knowledge_sets | train_runs."""
    type: type = str
    optional: bool = False
    """Left out of the parameters when empty."""
    when: tuple[str, str | tuple[str, ...]] | None = None
    """(other field, value or values): the field applies only when that field has one of them (for a train
    job's method, the method `auto` resolves to for the chosen student: see condition_values)."""
    default_from: str | None = None
    """A key of the store-backed choices whose value, where read, is the default instead of `default`."""
    implied: bool = False
    """Its default depends on other fields (default_value); left at that default it is sent as unset, so the
    engine picks the same value and the run is the one the CLI would start with no flag."""


def from_config(cls: type, name: str, label: str, **kw: Any) -> FormField:
    """A field whose default is the config dataclass's (engine.config), so the form never drifts from it."""
    value = config.default(cls, name)
    return FormField(name, label, "" if value is None else str(value), **kw)


def config_fields(cls: type, sources: dict[str, str] | None = None,
                  tweaks: dict[str, dict[str, Any]] | None = None) -> tuple[FormField, ...]:
    """A field for each option of the config dataclass that belongs in its form (engine.config.Show): label,
    default, type and whether it may stay empty all read from the field, so a new option needs no edit here.
    `tweaks`: what only a form knows of a field (fixed choices, when it applies, a default implied by others)."""
    out = []
    for f in config.options(cls):
        show = config.show(f)
        if not show.form:
            continue
        tp, nullable = config.base_type(config.field_types(cls)[f.name])
        value = config.default(cls, f.name)
        kw: dict[str, Any] = {"choices": ("no", "yes") if tp is bool else None, "source": (sources or {}).get(f.name),
                              "type": tp, "optional": nullable, **(tweaks or {}).get(f.name, {})}
        out.append(FormField(f.name, show.label or f.name.replace("_", " "),
                             ("yes" if value else "no") if tp is bool else "" if value is None else str(value), **kw))
    return tuple(out)


LETTERS_RECIPES = tuple(r for r in (*RECIPES, *PRESETS) if r != "onepass")
"""The recipe choices that train a generative (letters) student: the options of its trainer apply to them only."""
TRAIN_TWEAKS: dict[str, dict[str, Any]] = {
    # the recipe's choices (student.config.RECIPE_DEFAULTS): shown filled in, sent as unset when left so
    **{name: {"implied": True} for name in RECIPE_DEFAULTS["onepass"]},
    "recipe": {"choices": (*RECIPES, *PRESETS)},
    "method": {"choices": TRAIN_METHODS, "when": ("recipe", LETTERS_RECIPES), "implied": True},
    "rank": {"when": ("method", ("lora", "auto"))},
    "alpha": {"when": ("method", ("lora", "auto"))},
}


DISTILL_FIELDS = (
    FormField("dataset", "dataset", source="datasets"),
    FormField("teacher", "teacher model", DEFAULT_TEACHER, source="models"),
    from_config(DistillConfig, "sample", "sampling", choices=STRATEGIES),
    from_config(DistillConfig, "ratio", "ratio", type=float),
    from_config(DistillConfig, "seed", "seed", type=int),
    from_config(DistillConfig, "concurrency", "concurrent requests", type=int),
    from_config(DistillConfig, "limit", "at most sessions", type=int, optional=True),
)

FORMS: dict[str, tuple[FormField, ...]] = {
    "eval": (
        FormField("dataset", "dataset", source="datasets"),
        from_config(EvalConfig, "split", "split", choices=SPLITS),
        from_config(EvalConfig, "method", "method", choices=METHODS),
        FormField("model", "model", DEFAULT_STUDENT, source="models", when=("method", "llm"),
                  default_from="served_student"),  # the student generate and the arena answer with
        from_config(EvalConfig, "utilization", "utilization", choices=UTILIZATIONS, when=("method", "llm")),
        FormField("knowledge_set", "knowledge set", "", source="knowledge_sets", optional=True,
                  when=("method", "llm")),
        from_config(EvalConfig, "limit", "max sessions", type=int, optional=True),
    ),
    **{f.job_kind: DISTILL_FIELDS for f in DISTILLED},
    "train": (
        FormField("dataset", "dataset", source="datasets"),
        *(TRAIN_FIELDS := config_fields(TrainConfig, sources={"student": "models"}, tweaks=TRAIN_TWEAKS))[:1],
        FormField("knowledge_set", "knowledge set", "", source="knowledge_sets", optional=True),
        FormField("formats", "or formats", "", optional=True),
        *TRAIN_FIELDS[1:],
    ),
    "export": (
        FormField("run_id", "training run", source="train_runs", type=int),
        from_config(ExportConfig, "quant", "quantization", choices=tuple(QUANTS)),
        FormField("adapter", "adapter only", "no", choices=("no", "yes")),
    ),
    "experiment": (
        FormField("file", "grid file (.toml)", "assets/experiments/small.toml"),
    ),
}


def model_params(text: str | None) -> float | None:
    """A registry size ("135M", "1.5B") as a number of parameters; None when it says none."""
    text = (text or "").strip().upper()
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(text[-1:])
    try:
        return float(text[:-1]) * scale if scale else None
    except ValueError:
        return None


def condition_values(kind: str, values: dict[str, str], sizes: dict[str, str] | None = None) -> dict[str, str]:
    """The values `when` conditions read: a train job's method `auto` becomes what training will choose for
    the student (full fine-tuning up to FULL_MAX_PARAMS, LoRA above), where the registry knows its size."""
    out = dict(values)
    if kind == "train" and out.get("recipe") == "onepass":  # it fine-tunes its top layers: no LoRA to set
        out["method"] = "full"
    if kind == "train" and out.get("method") in ("auto", ""):
        n = model_params((sizes or {}).get(out.get("student") or ""))
        if n is not None:
            out["method"] = "full" if n <= FULL_MAX_PARAMS else "lora"
    return out


def applies(f: FormField, shown: dict[str, str]) -> bool:
    if not f.when:
        return True
    other, wanted = f.when
    return shown.get(other) in ((wanted,) if isinstance(wanted, str) else wanted)


def default_value(f: FormField, shown: dict[str, str]) -> str:
    """A field's default given the form's other values (`shown`, from condition_values)."""
    if f.implied and f.name in RECIPE_DEFAULTS["onepass"]:  # the chosen recipe's (student.config.RECIPE_DEFAULTS)
        recipe = shown.get("recipe") or config.default(TrainConfig, "recipe")
        value = recipe_default(recipe if recipe in RECIPE_DEFAULTS else None, f.name)
        if f.name == "lr" and value is None:  # the resolved method's (LR_DEFAULT: what training uses)
            value = LR_DEFAULT.get(shown.get("method") or "", LR_DEFAULT["lora"])  # auto, size unknown: LoRA's
        return "" if value is None else str(value)
    return f.default


def parse_form(kind: str, values: dict[str, str], shown: dict[str, str] | None = None) -> dict[str, Any]:
    """Typed job parameters from the form's strings; raises ValueError naming the bad field. `shown`: the
    values conditions read (condition_values; the form's own values by default)."""
    shown = values if shown is None else shown
    params: dict[str, Any] = {}
    for f in FORMS[kind]:
        if not applies(f, shown):
            continue
        raw = (values.get(f.name) or "").strip()
        if f.implied and raw == default_value(f, shown):
            continue
        if not raw:
            if f.optional:
                continue
            raise ValueError(f"{f.label}: a value is needed")
        if f.choices == ("no", "yes"):
            params[f.name] = raw == "yes"
            continue
        try:
            params[f.name] = f.type(raw)
        except ValueError:
            raise ValueError(f"{f.label}: {raw!r} is not a {f.type.__name__}") from None
    return params


def job_params(db, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The job's parameters from a filled form, built by the same engine functions the CLI uses."""
    if kind == "train":
        from ..engine.jobs.train import job_params as train_params  # lazy: pulls in torch

        return train_params(db, **params)
    if kind == "experiment":
        from ..engine.jobs.experiment import job_params as experiment_params

        return experiment_params(params["file"])
    return params


def form_choices(db) -> dict[str, list[str]]:
    """Choices for the store-backed form fields."""
    from ..engine.llm import registry

    models = registry.list_models(db)  # read once: every model field's choices come from it
    return {
        "datasets": [d.name for d in browse.dataset_summaries(db)],
        "models": [m.name for m in models],
        "installed_models": [m.name for m in models if m.installed],
        "knowledge_sets": [s.name for s in browse.knowledge_sets(db)],
        "train_runs": [str(r) for r in sorted(browse.train_runs(db), reverse=True)],
        "model_sizes": {m.name: m.params or "" for m in models},
        "served_student": registry.served_student(db, models),
    }


def form_choices_safe(db) -> dict[str, list[str]]:
    """form_choices, or as much of it as can be read (the form falls back to free text)."""
    try:
        return form_choices(db)
    except Exception:
        return {"datasets": [d.name for d in browse.dataset_summaries(db)]}


class LaunchScreen(WorkerErrors, ModalScreen[tuple[str, dict[str, Any]] | None]):
    """Pick a job kind, fill its form (defaults filled in), launch."""

    NOTIFY_WORKER_ERRORS = False  # the form stays usable: store-backed fields fall back to free text

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+s", "launch", "Launch")]

    def __init__(self, kind: str = "eval", defaults: dict[str, str] | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.kind = kind if kind in FORMS else "eval"
        self.defaults = defaults or {}  # field name -> value, over the form's own defaults
        self.choices: dict[str, list[str]] = {}
        self.built = False
        self._building = asyncio.Lock()
        self._implied: dict[str, str] = {}  # implied field -> the default it shows now (replaced while untouched)
        self._estimates_asked = 0  # only the newest estimate is shown: an older worker may finish after it

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="launch"):
            yield Label("New job: pick a kind, check the fields, ctrl+s launches", classes="dialog-question")
            yield Horizontal(Label("kind", classes="field-label"),
                             Select([(k, k) for k in FORMS], value=self.kind, allow_blank=False, id="kind",
                                    compact=True), classes="field")
            yield VerticalScroll(id="form")
            yield Static("", id="form-estimate")
            yield Static("", id="form-error", classes="error-line")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Launch", variant="primary", id="launch-btn", compact=True)
                yield Button("Cancel", id="cancel-btn", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load_choices()

    @work(thread=True, description="Reading form choices", exit_on_error=False)
    def load_choices(self) -> None:
        self.post_message(FormChoicesLoaded(form_choices_safe(self.app.db())))

    @on(FormChoicesLoaded)
    async def _loaded(self, msg: FormChoicesLoaded) -> None:
        await self._got_choices(msg.choices)

    def worker_failed(self, worker) -> None:
        if worker.group != "estimate":  # still usable: store-backed fields fall back to free text
            self.call_later(self._got_choices, {})

    async def _got_choices(self, choices: dict[str, list[str]]) -> None:
        self.choices = choices
        await self.build_form()

    @on(Select.Changed, "#kind")
    async def _kind(self, event: Select.Changed) -> None:
        if str(event.value) != self.kind:
            self.kind = str(event.value)
            await self.build_form()

    async def build_form(self) -> None:
        async with self._building:  # a kind switch while choices arrive must not interleave two rebuilds
            await self._build_form()

    async def _build_form(self) -> None:
        self.built = False  # no estimate or launch from a half-built form (its rows are another kind's)
        self._estimates_asked += 1  # and an estimate still under way for the form before is not shown
        self.query_one("#form-estimate", Static).update("")
        form = self.query_one("#form", VerticalScroll)
        await form.remove_children()
        rows = []
        for f in FORMS[self.kind]:
            options = list(f.choices or self.choices.get(f.source or "", []) or [])
            wanted = self.defaults.get(f.name, self.choices.get(f.default_from or "", f.default))
            if options and f.source == "models" and "installed_models" in self.choices:
                # Forms default only to installed models (an uninstalled default fails at once), and never make
                # the default student its own teacher; with none to offer the field stays empty and says why.
                installed = self.choices["installed_models"]
                fallback = [m for m in installed if f.name != "teacher" or m != DEFAULT_STUDENT]
                default = wanted if wanted in installed else (fallback[0] if fallback else "")
                labels = [(plain(o if o in installed else f"{o} (not installed)"), o) for o in options]
                widget = Select(labels, value=default or Select.NULL, allow_blank=True, id=f"f-{f.name}",
                                compact=True, prompt=f"(none installed: pull {wanted or 'one'} on Models, 4)")
            elif options:
                default = wanted if wanted in options else ("" if f.optional else options[0])
                widget = Select([(plain(o), o) for o in options], value=default or Select.NULL, allow_blank=f.optional,
                                id=f"f-{f.name}", compact=True, prompt="(none)")
            else:
                widget = Input(wanted, placeholder="(optional)" if f.optional else "", id=f"f-{f.name}",
                               compact=True)
            rows.append(Horizontal(Label(f.label, classes="field-label"), widget, classes="field", id=f"row-{f.name}"))
        await form.mount_all(rows)
        self._implied = {}
        self._apply_conditions()
        self.query_one("#form-error", Static).update("")
        self.built = True
        self.refresh_estimate()

    @on(Input.Changed, "#form Input")
    @on(Select.Changed, "#form Select")
    def refresh_estimate(self) -> None:
        """The one-line estimate of the job as filled in (engine.jobs.estimate; nothing is asked or written)."""
        if self.built:
            self._estimates_asked += 1
            self._estimate(self._estimates_asked, self.kind, self.values())

    @work(thread=True, exclusive=True, group="estimate", exit_on_error=False)
    def _estimate(self, asked: int, kind: str, values: dict[str, str]) -> None:
        from ..engine.jobs.estimate import one_line, plan

        try:
            db = self.app.db()
            line = one_line(plan(db, kind, job_params(db, kind, parse_form(kind, values))))
        except Exception as exc:  # an unfinished form: say what is missing instead of a figure
            line = f"estimate: – ({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})"
        def show() -> None:
            if asked == self._estimates_asked:  # a cancelled thread worker still runs to its end: drop its line
                self.query_one("#form-estimate", Static).update(plain(line))

        try:
            self.app.call_from_thread(show)
        except Exception:  # the form closed meanwhile
            pass

    def shown(self) -> dict[str, str]:
        """The values the form's conditions and implied defaults read (condition_values)."""
        return condition_values(self.kind, self.values(), self.choices.get("model_sizes"))

    @on(Select.Changed, "#form Select")
    def _apply_conditions(self) -> None:
        shown = self.shown()
        for f in FORMS[self.kind]:
            rows = self.query(f"#row-{f.name}")
            if not rows:
                continue
            if f.when:
                rows.first().display = applies(f, shown)
            if f.implied:  # follows the fields it depends on until the user types over it
                box = self.query_one(f"#f-{f.name}")
                now = "" if getattr(box, "value", None) is Select.NULL else str(box.value)
                if now in ("", self._implied.get(f.name)) and f.name not in self.defaults:
                    value = self._implied[f.name] = default_value(f, shown)
                    box.value = value if value or isinstance(box, Input) else Select.NULL

    def values(self) -> dict[str, str]:
        out = {}
        for f in FORMS[self.kind]:
            found = self.query(f"#f-{f.name}")
            if not found:
                continue
            w = found.first()
            if isinstance(w, Select):
                out[f.name] = "" if w.value is Select.NULL else str(w.value)
            else:
                out[f.name] = w.value
        return out

    def action_launch(self) -> None:
        if not self.built:
            return
        try:
            params = parse_form(self.kind, self.values(), self.shown())
        except ValueError as exc:
            self.query_one("#form-error", Static).update(str(exc))
            return
        self.dismiss((self.kind, params))

    @on(Button.Pressed, "#launch-btn")
    def _launch(self) -> None:
        self.action_launch()

    @on(Button.Pressed, "#cancel-btn")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_launch()


