"""Recipe: the paper's research-question grids (RQ1 format, RQ2 quantity, RQ3 utilization).

    kdbundle experiment run assets/experiments/small.toml      # a job; resumable
    kdbundle experiment report small                            # Markdown + PNG plots

A grid file names a student, the datasets to score on, shared training options, and `[[grid]]`
tables whose list-valued keys are crossed into cells:

    name = "small"
    student = "smollm2-135m"
    datasets = ["demo-electronics"]
    split = "test"            # scored split; limit = N scores a seeded sample of N sessions
    baselines = ["whole-session", "pairwise"]   # any eval --method but llm; default: every titles-only one
    fields = "titles"         # titles | titles+categories; default: each dataset's (titles where categories leak)
    teacher = "qwen2.5-coder-1.5b"     # optional: its zero-shot numbers on the same sessions
    [train]   # TrainConfig fields          [sft]   # SftDataConfig options (thoughts, k)
    [distill] # optional DistillConfig fields: distil missing rules/thoughts with this teacher
    [[grid]]
    rq = "RQ3"
    formats = ["patterns+rules"]       # "none", or formats joined by "+"
    utilization = ["icl", "sft", "icl+sft"]
    strategy = ["random"]              # sampling of thoughts (RQ2), with ratio and seed; rules are
    ratio = [1.0]                      #   distilled once from the [distill] table's sample
    pool = 0.3                         # sample thoughts inside a random 30% of train (no new teacher calls)
    also = [[], ["demo-clothing"]]     # extra domains accumulated into the knowledge set (RQ2)
    sft = { thought_sessions_only = true }   # this table's SftDataConfig options over [sft]

A cell = (dataset, formats, strategy, ratio, seed, pool, also, utilization, sft options). Running it: its knowledge
set (named from those inputs, created once; rules/thoughts distilled first when `[distill]` is
given and none exist), for sft and icl+sft a training run (keyed by inputs: student.runs.run_key)
and its q8_0 export (reused per run), then an evaluation (keyed by inputs: evaluate.run_key).
Everything is reused by identity, so an interrupted grid continues where it stopped; a finished
cell is recorded in `experiment_cells` and skipped. A cell that cannot run (e.g. no rules
distilled) is recorded as failed with the reason and the grid goes on.

Training puts the set's knowledge into the instruction (`[sft] knowledge_in_prompt = false` turns
that off), so "sft" and "icl+sft" cells of one knowledge set share one trained student and differ
only in whether its prompt at inference carries the knowledge (icl+sft: the format it was trained
with; sft: the bare session).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import check_file_name
from ..knowledge.formats import FORMAT_NAMES, get_format
from ..knowledge.icl import ICL_K
from ..knowledge.sampling import STRATEGIES
from ..llm.catalogue import DEFAULT_STUDENT
from ..student.config import TrainConfig, resolved
from ..types import FINE_TUNED, WITH_KNOWLEDGE, check_fields
from .evaluate import BASELINES, TITLE_BASELINES, UTILIZATIONS

GRID_KEYS = ("formats", "utilization", "strategy", "ratio", "seed", "pool", "also")
REFERENCE_RQ = "reference"


@dataclass(frozen=True)
class Cell:
    rq: str
    dataset: str
    formats: str = "none"
    """"none" or formats joined by "+" (patterns+rules+thoughts)."""
    utilization: str = "icl"
    strategy: str | None = None
    ratio: float | None = None
    seed: int = 0
    pool: float | None = None
    """Sample inside a seeded random `pool` fraction of train (knowledge.sampling); None: from all of it."""
    also: tuple[str, ...] = ()
    method: str = "llm"
    """llm for student cells; patterns / whole-session for baselines; llm with `model` for the teacher."""
    model: str | None = None
    sft: tuple[tuple[str, Any], ...] = ()
    """The grid table's `sft` options over the file's [sft] table, as sorted (name, value) pairs."""

    def __post_init__(self) -> None:  # read back from JSON: lists where tuples were
        object.__setattr__(self, "also", tuple(self.also))
        object.__setattr__(self, "sft", tuple(tuple(p) for p in self.sft))

    def key(self) -> str:
        d = asdict(self)
        d.pop("rq")  # the same cell in two RQs is one computation
        for name in ("sft", "pool"):
            if not d[name]:
                d.pop(name)  # cells of grids without these options keep the keys they had
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:24]

    def sampled(self) -> bool:
        """Whether the strategy and ratio choose anything: only formats distilled per session (thoughts)
        are sampled; patterns are mined from all of train and a rule set from the [distill] sample."""
        return self.formats != "none" and any(get_format(f).sample_order for f in self.formats.split("+"))

    def label(self) -> str:
        if self.method != "llm":
            return self.method
        if self.model:
            return f"teacher {self.model}"
        parts = [self.formats]
        if self.strategy and self.sampled():
            parts.append(f"{self.strategy}@{self.ratio:g}" + (f" of {self.pool:g}" if self.pool else ""))
        if self.also:
            parts.append("+" + "+".join(self.also))
        parts += [k.replace("_", " ") if v is True else f"{k}={v}" for k, v in self.sft]
        parts.append(self.utilization)
        return " / ".join(parts)


@dataclass
class ExperimentConfig:
    name: str
    student: str = DEFAULT_STUDENT
    datasets: list[str] = field(default_factory=list)
    split: str = "test"
    limit: int | None = None
    seed: int = 0
    baselines: list[str] = field(default_factory=lambda: list(TITLE_BASELINES))
    """Reference rows: eval methods other than llm (default: every titles-only baseline, the strongest included)."""
    fields: str | None = None
    teacher: str | None = None
    quant: str = "q8_0"
    k: int = ICL_K
    train: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] | None = None
    grid: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "experiment") -> ExperimentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if not data.get("name") or not data.get("datasets"):
            raise InputError(f"{where}: needs name and datasets")
        check_file_name(data["name"], f"{where}: experiment name")  # it names the report's files
        cfg = cls(**data)
        if cfg.fields is not None:
            check_fields(cfg.fields)
        cells = cfg.cells()  # validates the grid now, not halfway through a run
        tcfg = resolved(TrainConfig(**{k: v for k, v in cfg.train.items()}))
        if tcfg.recipe != "letters" and any(c.method == "llm" and c.utilization in FINE_TUNED for c in cells):
            raise InputError(f'{where}: a grid trains letters students (the paper\'s questions are about their '
                             f'prompts): add recipe = "letters" to [train], not {tcfg.recipe}')
        return cfg

    def cells(self) -> list[Cell]:
        out: list[Cell] = []
        for ds in self.datasets:
            for b in self.baselines:
                if b not in BASELINES:
                    raise InputError(f"unknown baseline {b!r} ({' | '.join(BASELINES)})")
                out.append(Cell(REFERENCE_RQ, ds, method=b, utilization="zero-shot", seed=self.seed))
            if self.teacher:
                out.append(Cell(REFERENCE_RQ, ds, utilization="zero-shot", model=self.teacher, seed=self.seed))
        for i, g in enumerate(self.grid, 1):
            unknown = sorted(set(g) - {"rq", "sft", *GRID_KEYS})
            if unknown:
                raise InputError(f"grid {i}: unknown key(s) {', '.join(unknown)}")
            _check_sft(g.get("sft"), f"grid {i}")
            values = {k: g.get(k) for k in GRID_KEYS}
            lists = {k: (v if isinstance(v, list) else [v]) for k, v in values.items() if v is not None}
            lists.setdefault("formats", ["none"])
            lists.setdefault("utilization", ["icl"])
            lists.setdefault("strategy", [None])
            lists.setdefault("ratio", [None])
            lists.setdefault("seed", [self.seed])
            lists.setdefault("pool", [None])
            if "also" in values and values["also"] is not None:
                lists["also"] = [tuple(a) for a in values["also"]] if all(isinstance(a, list) for a in values["also"]) \
                    else [tuple(values["also"])]
            else:
                lists["also"] = [()]
            for ds in self.datasets:
                for combo in itertools.product(*(lists[k] for k in GRID_KEYS)):
                    values = dict(zip(GRID_KEYS, combo))
                    values["also"] = tuple(a for a in dict.fromkeys(values["also"]) if a != ds)
                    c = Cell(str(g.get("rq", f"grid{i}")), ds, **values, sft=tuple(sorted((g.get("sft") or {}).items())))
                    _check_cell(c, f"grid {i}")
                    out.append(c)
        return list({(c.rq, c.key()): c for c in out}.values())


def _check_sft(options: Any, where: str) -> None:
    if options is None:
        return
    from ..student.examples import SftDataConfig

    known = {f.name for f in dataclasses.fields(SftDataConfig)} - {"datasets", "knowledge_set", "pair_model"}
    if not isinstance(options, dict) or set(options) - known:
        bad = sorted(set(options) - known) if isinstance(options, dict) else [repr(options)]
        raise InputError(f"{where}: unknown sft option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")


def _check_cell(c: Cell, where: str) -> None:
    if c.utilization not in UTILIZATIONS:
        raise InputError(f"{where}: unknown utilization {c.utilization!r} (known: {', '.join(UTILIZATIONS)})")
    if c.formats != "none":
        bad = [f for f in c.formats.split("+") if f not in FORMAT_NAMES]
        if bad:
            raise InputError(f"{where}: unknown format(s) {', '.join(bad)} (known: none, {', '.join(FORMAT_NAMES)})")
    elif c.utilization in WITH_KNOWLEDGE and c.method == "llm" and not c.model:
        pass  # "none" with icl is the zero-knowledge prompt (same as zero-shot): allowed as RQ1's first row
    if c.strategy is not None and c.strategy not in STRATEGIES:
        raise InputError(f"{where}: unknown strategy {c.strategy!r} (known: {', '.join(STRATEGIES)})")
    if c.strategy is not None and not (c.ratio and 0 < c.ratio <= 1):
        raise InputError(f"{where}: strategy {c.strategy} needs a ratio in (0, 1]")
    if c.pool is not None:
        if c.strategy is None or not 0 < c.pool <= 1:
            raise InputError(f"{where}: pool needs a strategy and a value in (0, 1] (got {c.pool})")
        if c.ratio > c.pool:
            raise InputError(f"{where}: ratio {c.ratio:g} is over the pool {c.pool:g}: a sample must fit in the "
                             "pool the teacher distilled")


def load_config(path: str | Path) -> ExperimentConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid TOML ({exc})") from exc
    return ExperimentConfig.from_dict(data, str(p))


# ---------------------------------------------------------------- running
