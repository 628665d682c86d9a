"""The model formats table (llm.model_formats) is the one place a model's kind is decided: every format
opens through open_backend by its row, the registry reads its rows, and no other module tests a format's name."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdbundle.engine.errors import InputError, KdError
from kdbundle.engine.llm import backends, registry
from kdbundle.engine.llm.model_formats import MODEL_FORMATS
from kdbundle.engine.llm.registry import format_of

ROOT = Path(__file__).resolve().parents[2]


class Recorded:
    """Stands in for LlamaCppBackend: what it was asked to load, without loading it."""

    def __init__(self, name, path, **kwargs):
        self.name, self.path, self.kwargs = name, Path(path), kwargs


def _register(db, fmt: str, tmp_path: Path) -> str:
    """A model of each format, registered as `models add` / export would."""
    if fmt == "gguf":
        return "smollm2-135m"
    if fmt == "gguf-lora":
        adapter = tmp_path / "adapter.gguf"
        adapter.write_bytes(b"GGUF")  # never loaded: Recorded stands in for llama.cpp
        registry._insert(db, {"name": "tuned", "format": "gguf-lora", "path": str(adapter), "source": "file",
                              "base_model": "smollm2-135m", "config": {"chat_template": True}})
        return "tuned"
    if fmt == "openai":
        registry.add_endpoint(db, "remote", "http://127.0.0.1:9/v1", "teacher")  # no request is made
        return "remote"
    raise AssertionError(f"no test model for format {fmt!r}: add one here with its row")


@pytest.mark.parametrize("fmt", list(MODEL_FORMATS))
def test_every_format_opens_through_its_row(db, tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(backends, "LlamaCppBackend", Recorded)
    name = _register(db, fmt, tmp_path)
    info = registry.get_model(db, name)
    kind = format_of(db, name)
    assert info.format == fmt and kind is MODEL_FORMATS[fmt] and info.installed
    b = registry.open_backend(db, name, n_ctx=512)
    if kind.local:
        assert isinstance(b, Recorded) and b.name == name and b.kwargs["n_ctx"] == 512
        if kind.over_base:  # its own file over its base model's
            assert b.kwargs["lora_path"] == registry.model_file(db, info)
            assert b.path == registry.model_file(db, registry.get_model(db, info.base_model))
        else:
            assert b.path == registry.model_file(db, info)
    else:
        assert b.name == name and not getattr(b, "decodes", False)
        with pytest.raises(KdError, match=f"is {kind.what}, not a local file"):
            registry.model_file(db, info)


def test_an_unknown_format_is_listed_and_refused_in_one_line(db, tmp_path):
    registry._insert(db, {"name": "future", "format": "onnx", "path": str(tmp_path / "m.onnx"), "source": "file"})
    assert "future" in [m.name for m in registry.list_models(db)]
    with pytest.raises(KdError, match="format 'onnx'.*known: gguf, gguf-lora, openai"):
        registry.open_backend(db, "future")


class Echo:
    """A backend of a format no kdbundle has: it answers with the session's first two products."""

    chat_template, decodes = True, False

    def __init__(self, name: str, url: str):
        self.name, self.url = name, url

    def chat(self, messages, *, schema=None, params=None, on_token=None, grammar=None, decoder=None):
        return backends.Completion('{"bundles": [{"items": [1, 2], "intent": "echo"}]}', None, 9, 0.01, 0.01, "stop")

    def count_tokens(self, messages):
        return None

    n_ctx = 4096

    def describe(self):
        return {"backend": "echo", "url": self.url}


def test_a_new_backend_is_its_class_and_one_row(db, monkeypatch):
    """What the README's "Adding a backend" asks, done here: the class above, one row, registry.register; every
    site (open_backend, generate, evaluation's workers, the teacher's concurrency, model_file) follows the row."""
    from kdbundle.engine.knowledge.teacher import open_teacher
    from kdbundle.engine.llm.generate import BundleGenerator, GenerateConfig, typed_session
    from kdbundle.engine.llm.model_formats import ModelFormat

    row = ModelFormat("echo", "an echo server", False, lambda info, how: Echo(info.name, info.config["url"]))
    monkeypatch.setitem(MODEL_FORMATS, "echo", row)
    info = registry.register(db, "echoes", "echo", source="echo:local", config={"url": "echo://here"})
    assert info.installed and format_of(db, "echoes") is row
    gen = BundleGenerator(db, GenerateConfig(model="echoes"))
    out = gen.generate(typed_session(["USB-C charger", "USB-C cable", "Wool socks"]), log=False)
    assert [sorted(b.items) for b in out.bundles] == [[1, 2]] and isinstance(gen.backend, Echo)
    assert open_teacher(db, "echoes").max_concurrency > 1  # not local: the server takes many at once
    with pytest.raises(KdError, match="is an echo server, not a local file"):
        registry.model_file(db, info)
    with pytest.raises(InputError, match="unknown model format 'onnx'"):
        registry.register(db, "other", "onnx")


# A format's name compared anywhere but the table (and the registry's writers) would be a second place to edit.
_TESTS = re.compile(r"""format\s*(==|!=|not in|in)\s*[("']|isinstance\([^)]*(LlamaCppBackend|OpenAIBackend)"""
                    r"""|describe\(\)\.get\(["']backend""")


def test_no_module_but_the_table_tests_a_model_format():
    seen = []
    for folder in ("engine", "tui"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "model_formats.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                # dataset formats (jsonl, demo) and report formats are other vocabularies
                if _TESTS.search(line) and not re.search(r"\b(d|dataset|ds|data)\.format|REPORT_FORMAT", line):
                    seen.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not seen, "\n".join(seen)
