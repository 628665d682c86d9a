"""The app's screens, declared once: the nav bar, the app's modes and key bindings, the command palette and
the help screen all read this table. A new screen is a class and one row here."""
from __future__ import annotations

from dataclasses import dataclass

from textual.screen import Screen

from .arena import ArenaScreen
from .jobs import JobsScreen
from .knowledge import KnowledgeScreen
from .models import ModelsScreen
from .results import ResultsScreen
from .sessions import SessionsScreen


@dataclass(frozen=True)
class ScreenEntry:
    mode: str
    """The app mode's name (app.switch_mode)."""
    key: str
    title: str
    short: str
    """The nav bar's title on narrow terminals."""
    cls: type[Screen]


SCREENS: tuple[ScreenEntry, ...] = (
    ScreenEntry("sessions", "1", "Sessions", "Sess", SessionsScreen),
    ScreenEntry("knowledge", "2", "Knowledge", "Know", KnowledgeScreen),
    ScreenEntry("jobs", "3", "Jobs", "Jobs", JobsScreen),
    ScreenEntry("models", "4", "Models", "Model", ModelsScreen),
    ScreenEntry("arena", "5", "Arena", "Arena", ArenaScreen),
    ScreenEntry("results", "6", "Results", "Res", ResultsScreen),
)
MODES = {s.mode: s.cls for s in SCREENS}


def key_of(mode: str) -> str:
    """The key that switches to `mode`."""
    return next(s.key for s in SCREENS if s.mode == mode)
