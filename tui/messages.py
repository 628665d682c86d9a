"""Small typed messages: how thread workers hand results back to the event loop.

Workers never touch widgets; they post one of these and the screen's handler updates the UI.
Message.post_message is thread-safe, so a worker calls `self.post_message(Loaded(...))` directly.
Each is a dataclass (Textual's Message initialises itself in __post_init__ for exactly this).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from ..engine import browse
from .arena_run import Outcome


@dataclass
class DatasetsLoaded(Message):
    datasets: list[browse.DatasetSummary]


@dataclass
class SessionsLoaded(Message):
    dataset: str
    page: browse.SessionPage


@dataclass
class SessionLoaded(Message):
    detail: browse.SessionDetail


@dataclass
class OpenInArena(Message):
    """Ask the app to show the Arena with this session picked."""

    session_id: int


@dataclass
class KnowledgeLoaded(Message):
    dataset: str | None
    kind: str
    rows: list[browse.KnowledgeRow]


@dataclass
class KnowledgeSetsLoaded(Message):
    sets: list[browse.KnowledgeSetRow]


@dataclass
class PatternsMined(Message):
    dataset: str
    count: int
    seconds: float


class DataChanged(Message, bubble=False):
    """Another process changed what pickers and headers show (browse.data_signature): reload them."""


@dataclass
class JobsPolled(Message, bubble=False):
    """A fresh read of the jobs table (newest first)."""

    jobs: list[dict[str, Any]]


@dataclass
class JobDetailLoaded(Message):
    """New log lines and training points of the selected job since the last read."""

    job_id: int
    log: list[dict[str, Any]]
    points: list[browse.TrainPoint]
    run: dict[str, Any] | None
    """The train_runs row of a train job, once it exists."""
    valid: list[browse.ValidPoint] = field(default_factory=list)
    """Every valid score so far (a few rows: read whole each time)."""


@dataclass
class JobLaunched(Message):
    job_id: int
    kind: str


@dataclass
class JobSteered(Message):
    """A cancel or resume request went through: say so and poll the jobs again."""

    job_id: int
    text: str


@dataclass
class ModelsLoaded(Message):
    models: list[dict[str, Any]]


@dataclass
class PullProgress(Message):
    name: str
    done: int
    total: int | None


@dataclass
class ModelPulled(Message):
    name: str


@dataclass
class ModelDeleted(Message):
    name: str


@dataclass
class RunsPruned(Message):
    """`kdbundle runs prune` from the Models screen: what each run freed (or would free, on a dry run)."""

    runs: list[dict[str, Any]]
    dry_run: bool


@dataclass
class Token(Message):
    """A piece of streamed model output for one Arena pane."""

    pane: str
    run: int
    """Which Run press produced it; stale tokens from a cancelled run are dropped."""
    text: str


@dataclass
class GenerationFinished(Message):
    """One Arena pane's generation ended, with its timing and scores."""

    pane: str
    run: int
    outcome: Outcome


@dataclass
class ArenaChoicesLoaded(Message):
    models: list[str]
    installed: list[str]
    knowledge_sets: list[str]
    hint: str | None
    """E.g. which `kdbundle models pull` to run."""
    datasets: list[str] = field(default_factory=list)
    """Datasets a comparison of two students can run on."""
    student: str = ""
    """The student served where none is named (registry.served_student): the student pane's default."""


@dataclass
class CompareProgress(Message):
    """How far one side of the arena's student-vs-student comparison is (replaces the previous line)."""

    run: int
    side: str
    done: int
    total: int


@dataclass
class CompareFinished(Message):
    """The comparison ended: its result (evaluation.versus.compare), or why it did not (stopped, failed)."""

    run: int
    result: dict[str, Any] | None
    note: str | None = None


@dataclass
class ResultsLoaded(Message):
    runs: list[browse.EvalRunRow]
    reports: list[dict[str, Any]]
    newest_real: str | None = None
    """The newest dataset that is not the demo's (the filter starts there), None without one."""


@dataclass
class FormChoicesLoaded(Message):
    choices: dict[str, Any]


@dataclass
class ProvenanceLoaded(Message):
    markdown: str


@dataclass
class SessionResolved(Message):
    """The session a typed reference names (the arena's picker)."""

    session_id: int
