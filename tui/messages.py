"""Small typed messages: how thread workers hand results back to the event loop.

Workers never touch widgets; they post one of these and the screen's handler updates the UI.
Message.post_message is thread-safe, so a worker calls `self.post_message(Loaded(...))` directly.
"""
from __future__ import annotations

from typing import Any

from textual.message import Message

from ..engine import browse


class DatasetsLoaded(Message):
    def __init__(self, datasets: list[browse.DatasetSummary]) -> None:
        super().__init__()
        self.datasets = datasets


class SessionsLoaded(Message):
    def __init__(self, dataset: str, page: browse.SessionPage) -> None:
        super().__init__()
        self.dataset = dataset
        self.page = page


class SessionLoaded(Message):
    def __init__(self, detail: browse.SessionDetail) -> None:
        super().__init__()
        self.detail = detail


class OpenInArena(Message):
    """Ask the app to show the Arena with this session picked."""

    def __init__(self, session_id: int) -> None:
        super().__init__()
        self.session_id = session_id


class KnowledgeLoaded(Message):
    def __init__(self, dataset: str | None, kind: str, rows: list[browse.KnowledgeRow]) -> None:
        super().__init__()
        self.dataset = dataset
        self.kind = kind
        self.rows = rows


class KnowledgeSetsLoaded(Message):
    def __init__(self, sets: list[browse.KnowledgeSetRow]) -> None:
        super().__init__()
        self.sets = sets


class PatternsMined(Message):
    def __init__(self, dataset: str, count: int, seconds: float) -> None:
        super().__init__()
        self.dataset = dataset
        self.count = count
        self.seconds = seconds


class DataChanged(Message, bubble=False):
    """Another process changed what pickers and headers show (browse.data_signature): reload them."""


class JobsPolled(Message, bubble=False):
    """A fresh read of the jobs table (newest first)."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.jobs = jobs


class JobDetailLoaded(Message):
    """New log lines and training points of the selected job since the last read."""

    def __init__(self, job_id: int, log: list[dict[str, Any]], points: list[browse.TrainPoint],
                 run: dict[str, Any] | None, valid: list[browse.ValidPoint] | None = None) -> None:
        super().__init__()
        self.job_id = job_id
        self.log = log
        self.points = points
        self.run = run  # the train_runs row of a train job, once it exists
        self.valid = valid or []  # every valid score so far (a few rows: read whole each time)


class JobLaunched(Message):
    def __init__(self, job_id: int, kind: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.kind = kind


class ModelsLoaded(Message):
    def __init__(self, models: list[dict[str, Any]]) -> None:
        super().__init__()
        self.models = models


class PullProgress(Message):
    def __init__(self, name: str, done: int, total: int | None) -> None:
        super().__init__()
        self.name = name
        self.done = done
        self.total = total


class Token(Message):
    """A piece of streamed model output for one Arena pane."""

    def __init__(self, pane: str, run: int, text: str) -> None:
        super().__init__()
        self.pane = pane
        self.run = run  # which Run press produced it; stale tokens from a cancelled run are dropped
        self.text = text


class GenerationFinished(Message):
    """One Arena pane's generation ended, with its timing and scores."""

    def __init__(self, pane: str, run: int, outcome: Any) -> None:
        super().__init__()
        self.pane = pane
        self.run = run
        self.outcome = outcome


class ArenaChoicesLoaded(Message):
    def __init__(self, models: list[str], installed: list[str], knowledge_sets: list[str],
                 hint: str | None) -> None:
        super().__init__()
        self.models = models
        self.installed = installed
        self.knowledge_sets = knowledge_sets
        self.hint = hint  # e.g. which `kdbundle models pull` to run


class ResultsLoaded(Message):
    def __init__(self, runs: list[browse.EvalRunRow], reports: list[dict[str, Any]]) -> None:
        super().__init__()
        self.runs = runs
        self.reports = reports


class JobSteered(Message):
    """A cancel or resume request went through: say so and poll the jobs again."""

    def __init__(self, job_id: int, text: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.text = text


class ModelPulled(Message):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class FormChoicesLoaded(Message):
    def __init__(self, choices: dict[str, list[str]]) -> None:
        super().__init__()
        self.choices = choices


class ProvenanceLoaded(Message):
    def __init__(self, markdown: str) -> None:
        super().__init__()
        self.markdown = markdown


class SessionResolved(Message):
    """The session a typed reference names (the arena's picker)."""

    def __init__(self, session_id: int) -> None:
        super().__init__()
        self.session_id = session_id


class ModelDeleted(Message):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
