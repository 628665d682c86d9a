"""kdbundle.engine and kdbundle.store must not depend on Textual (the CLI and job workers stay light).

Run in a fresh interpreter: this test process has usually imported Textual already.
"""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import kdbundle.engine

ENGINE_DIR = Path(kdbundle.engine.__file__).parent


def engine_modules() -> list[str]:
    mods = ["kdbundle.engine", "kdbundle.store", "kdbundle.store.db", "kdbundle.store.migrations"]
    for info in pkgutil.walk_packages([str(ENGINE_DIR)], prefix="kdbundle.engine."):
        mods.append(info.name)
    return sorted(set(mods))


def test_engine_modules_are_found():
    mods = engine_modules()
    assert "kdbundle.engine.jobs.runner" in mods and "kdbundle.engine.browse" in mods
    assert any(m.startswith("kdbundle.engine.cli") for m in mods)


def test_engine_and_store_import_without_textual():
    mods = engine_modules()
    code = (
        "import importlib, sys\n"
        f"mods = {mods!r}\n"
        "failed = []\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{m}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed), file=sys.stderr)\n"
        "loaded = sorted(n for n in sys.modules if n == 'textual' or n.startswith('textual.'))\n"
        "print(','.join(loaded))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"engine modules failed to import:\n{proc.stderr}"
    assert proc.stdout.strip() == "", f"importing the engine pulled in Textual: {proc.stdout.strip()[:300]}"


def test_the_tui_does_import_textual():
    # The check above can only fail if the probe can see Textual at all.
    proc = subprocess.run([sys.executable, "-c", "import sys, kdbundle.tui.app; print('textual' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "True", proc.stderr
