"""The model registry: built-in catalogue, chunk assembly, local files, endpoints, removal, CLI."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdbundle.engine.errors import InputError, KdError, NotFound
from kdbundle.engine.llm import registry

KDBUNDLE = str(Path(sys.executable).parent / "kdbundle")


def make_chunks(folder: Path, sizes=(3000, 5000, 1234)) -> tuple[list[Path], bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(sum(sizes))
    parts, at = [], 0
    for i, size in enumerate(sizes):
        p = folder / f"part{i:02d}.bin"
        p.write_bytes(data[at:at + size])
        parts.append(p)
        at += size
    return parts, data


def test_assembly_joins_in_order_and_verifies_the_hash(tmp_path):
    parts, data = make_chunks(tmp_path / "chunks")
    dest = tmp_path / "cache" / "model.gguf"
    seen = []
    out = registry.assemble(parts, dest, hashlib.sha256(data).hexdigest(), progress=lambda d, t: seen.append((d, t)))
    assert out == dest and dest.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left behind


def test_wrong_hash_leaves_no_file(tmp_path):
    parts, data = make_chunks(tmp_path / "chunks")
    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(KdError, match="sha256"):
        registry.assemble(list(reversed(parts)), dest, hashlib.sha256(data).hexdigest())  # wrong order
    assert list(dest.parent.iterdir()) == []


def test_interrupted_assembly_leaves_no_usable_partial_file(tmp_path):
    parts, data = make_chunks(tmp_path / "chunks", sizes=(9 << 20, 9 << 20))  # several 8 MB blocks

    def interrupt(done, total):
        if done < total:
            raise KeyboardInterrupt  # as a user's ctrl-c would, half-way through

    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(KeyboardInterrupt):
        registry.assemble(parts, dest, hashlib.sha256(data).hexdigest(), progress=interrupt)
    assert list(dest.parent.iterdir()) == []
    # A process killed outright can leave its temporary file, but never under the final name:
    # the next assembly ignores it and produces the verified file.
    (dest.parent / f"{dest.name}.partial-999999").write_bytes(data[:100])
    registry.assemble(parts, dest, hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data


def test_catalogue_lists_every_builtin_with_pinned_packages(db):
    names = [m.name for m in registry.list_models(db)]
    assert names[:4] == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma3-270m"]
    for b in registry.CATALOGUE.values():
        assert all(c.version and c.version[0].isdigit() for c in b.chunks) and len(b.sha256) == 64
    assert len(registry.CATALOGUE["qwen2.5-coder-1.5b"].chunks) == 22
    assert len(registry.CATALOGUE["qwen2.5-coder-0.5b"].chunks) == 6
    assert registry.CATALOGUE["gemma3-270m"].chat_template is False
    student = registry.get_model(db, registry.DEFAULT_STUDENT)
    assert student.installed and Path(student.path).stat().st_size == student.size_bytes


def test_the_student_file_matches_its_recorded_hash(db):
    info = registry.get_model(db, "smollm2-135m")
    digest = hashlib.sha256()
    with open(registry.model_file(db, info), "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    assert digest.hexdigest() == info.sha256


def test_a_gguf_path_works_as_a_model(db):
    path = registry.model_file(db, registry.get_model(db, "smollm2-135m"))
    info = registry.get_model(db, str(path))
    assert info.format == "gguf" and info.installed and info.path == str(path.resolve())
    with pytest.raises(NotFound):
        registry.get_model(db, "no-such-model")


def test_add_local_reads_the_header_and_remove_keeps_the_users_file(db, tmp_path):
    src = registry.model_file(db, registry.get_model(db, "smollm2-135m"))
    copy = tmp_path / "mine.gguf"
    copy.write_bytes(src.read_bytes())
    info = registry.add_local(db, "mine", copy)
    assert (info.family, info.params, info.quant, info.format) == ("llama", "135M", "Q4_1", "gguf")
    assert info.installed and info in registry.list_models(db)
    with pytest.raises(InputError, match="exists already"):
        registry.add_local(db, "mine", copy)
    with pytest.raises(InputError, match="built-in"):
        registry.add_local(db, "smollm2-135m", copy)
    registry.delete_model(db, "mine")
    assert copy.exists() and "mine" not in [m.name for m in registry.list_models(db)]


def test_endpoint_stores_the_variable_name_never_the_key(db, monkeypatch):
    monkeypatch.setenv("KD_TEST_KEY", "sk-test-secret-value-123")
    info = registry.add_endpoint(db, "remote", "http://127.0.0.1:9/v1", "teacher", api_key_env="KD_TEST_KEY")
    assert info.format == "openai" and info.config["api_key_env"] == "KD_TEST_KEY"
    dump = "\n".join(db.conn.iterdump())
    assert "KD_TEST_KEY" in dump and "sk-test-secret-value-123" not in dump
    with pytest.raises(InputError, match="name of an environment variable"):
        registry.add_endpoint(db, "bad", "http://127.0.0.1:9/v1", "t", api_key_env="sk-live abc")
    with pytest.raises(InputError, match="http"):
        registry.add_endpoint(db, "bad", "ftp://x", "t")


def test_hf_model_is_registered_but_not_downloaded_until_pulled(db):
    info = registry.add_hf(db, "tiny", "someone/some-repo/model-q8_0.gguf")
    assert not info.installed and info.source == "hf:someone/some-repo/model-q8_0.gguf"
    assert info.pull_command == "kdbundle models pull tiny"
    with pytest.raises(KdError, match="pull"):
        registry.model_file(db, info)
    with pytest.raises(InputError, match="owner/repo/file.gguf"):
        registry.add_hf(db, "bad", "just-a-name")


def test_models_cli_list_json_add_and_remove(tmp_path):
    db = tmp_path / "kd.db"

    def kd(*args):
        return subprocess.run([KDBUNDLE, "--db", str(db), *args], capture_output=True, text=True, timeout=120)

    out = kd("models", "list", "--json")
    assert out.returncode == 0, out.stderr
    models = json.loads(out.stdout)
    keys = {"name", "family", "params", "format", "quant", "size_bytes", "source", "installed"}
    assert all(keys <= set(m) for m in models)
    assert {m["name"]: m["installed"] for m in models}["smollm2-135m"] is True
    add = kd("models", "add", "far", "--base-url", "http://127.0.0.1:9/v1", "--api-model", "m", "--api-key-env", "KD_X")
    assert add.returncode == 0, add.stderr
    names = [m["name"] for m in json.loads(kd("models", "list", "--json").stdout)]
    assert "far" in names
    assert kd("models", "remove", "far").returncode == 0
    assert "far" not in [m["name"] for m in json.loads(kd("models", "list", "--json").stdout)]
    bad = kd("models", "add", "x", "--path", str(tmp_path / "nope.gguf"))
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_the_served_student_is_the_newest_one_pass_export_then_the_newest_other_then_the_base(db, tmp_path):
    """What `generate`, the arena and the evaluation form answer with where no model is named."""
    assert registry.served_student(db) == registry.DEFAULT_STUDENT  # a fresh install: the untrained base

    def export(name: str, run_id: int, onepass: bool, *, file: bool = True):
        path = tmp_path / f"{name}.gguf"
        if file:
            path.write_bytes(b"GGUF")
        registry.register(db, name, "gguf", source=f"run:{run_id}", path=str(path), run_id=run_id,
                          config={"onepass": "onepass-v1"} if onepass else {})

    registry.add_local(db, "mine", registry.model_file(db, registry.get_model(db, "smollm2-135m")))
    assert registry.served_student(db) == registry.DEFAULT_STUDENT  # a model added by hand is not a trained student
    export("letters-run1", 1, onepass=False)
    assert registry.served_student(db) == "letters-run1"
    export("onepass-run2", 2, onepass=True)
    export("letters-run3", 3, onepass=False)  # newer, but a letters student: the one-pass one is served
    assert registry.served_student(db) == "onepass-run2"
    export("onepass-run4", 4, onepass=True, file=False)  # registered, its file gone: not installed, not served
    assert registry.served_student(db) == "onepass-run2"
    export("onepass-run5", 5, onepass=True)
    assert registry.served_student(db) == "onepass-run5"


def test_an_evaluation_without_a_model_names_the_served_student_for_every_reader(db, tmp_path):
    """evaluate.with_model: the run's key, its prompt spec, its workers and its time estimate all read one name."""
    from kdbundle.engine.evaluation.evaluate import EvalConfig, with_model
    from kdbundle.engine.jobs.estimate import _eval_key

    cfg = EvalConfig("electronic", method="llm")
    assert with_model(db, cfg).model == registry.DEFAULT_STUDENT
    path = tmp_path / "onepass-run7.gguf"
    path.write_bytes(b"GGUF")
    registry.register(db, "onepass-run7", "gguf", source="run:7", path=str(path), run_id=7,
                      config={"onepass": "onepass-v1"})
    assert with_model(db, cfg).model == "onepass-run7"
    assert with_model(db, EvalConfig("electronic", method="llm", model="smollm2-135m")).model == "smollm2-135m"
    assert with_model(db, EvalConfig("electronic", method="pairwise")).model is None  # a baseline runs no model
    assert _eval_key(db, "llm", None) == ("eval:llm|onepass-run7", True)  # its plan is the served student's
