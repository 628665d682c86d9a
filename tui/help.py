"""The help screen: what each screen is for and its keys."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown

from .screens import SCREENS

HELP_TEMPLATE = """\
# kdbundle

Distil a teacher LLM's bundle-generation skill into a small, fast student.
A typical path: browse the data (**{sessions}**), mine patterns (**{knowledge}**, `m`), start a distillation and a
training job (**{jobs}**, `n`), then compare teacher and student on a session (**{arena}**).

**Anywhere** — `{first}`…`{last}` switch screens ({titles}) ·
`ctrl+p` command palette (every main action) · `?` or `f1` this help · `ctrl+t` dark / light theme ·
`q` or `ctrl+q` quit (`q` types a q when a text field has focus) (jobs keep running in their own processes and are found again on start).

**Sessions** — `/` filter by title, category or id · `s` cycle split · `enter` open the session's
products · `a` send the session to the Arena · `d` load the demo dataset.
Coloured tags `B1`, `B2` … mark which ground-truth bundle each product belongs to.

**Knowledge** — tabs Patterns / Rules / Thoughts / Sets (`tab` moves between widgets, arrows between
tabs) · `m` mine category patterns · `o` sort patterns (support, confidence, itemset) · `p` or
`enter` show a record's source sessions and teacher outputs · `f` thoughts: all / accepted / rejected ·
`a` accept, `x` reject, `e` edit the highlighted rule or thought (each a new reviewed record; the old one kept).

**Jobs** — `n` new job (distillation, training, export, evaluation, experiment) · `c` cancel (finished work
is kept) · `r` resume a failed or cancelled job · `l` focus the log. Jobs are separate processes: closing this
app does not stop them.

**Models** — `p` pull (download) the highlighted model · `x` export the run it came from ·
`delete` remove a registered model (asks first) · `f` free the disk finished training runs no longer need
(`kdbundle runs prune`).

**Arena** — `ctrl+r` run teacher and student side by side · `escape` stop · `u` cycle the student's utilization
(zero-shot, ICL, SFT, ICL+SFT) · `k` cycle the knowledge set · `s` pick a session by id · `t` type your own
products. Hits against the ground truth are marked ✓; both metric families are shown. `c` student vs student: two
models or baselines over a dataset split (or N sessions of it), each session's scores side by side with B − A and
the paired bootstrap 95% interval (`enter` opens a session; stored answers are reused).

**Results** — `m` cycle the plotted metric · `e` show experiment reports · `r` reload.

**Metrics** — *AICL*: a prediction is a hit when it is a subset of a ground-truth bundle; precision, recall
and coverage are averaged over sessions with output. *Strict*: one-to-one matching by best Jaccard; sessions
without valid output count as zero.
"""
HELP = HELP_TEMPLATE.format(first=SCREENS[0].key, last=SCREENS[-1].key, titles=", ".join(s.title for s in SCREENS),
                            **{s.mode: s.key for s in SCREENS})
"""The help text, its keys and screen names read from the table of screens."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide", id="help"):
            yield Markdown(HELP)
        yield Footer(compact=True)
