"""Setup the screen tests share: a fresh demo database, and the app opened on it at one screen."""
from __future__ import annotations

import contextlib

import pytest
from tui_support import demo_db

from kdbundle.tui.app import KdApp


@pytest.fixture
def demo_path(tmp_path):
    """The path of a fresh database holding the built-in demo datasets (`tmp_path / "kd.db"`)."""
    return demo_db(tmp_path / "kd.db")


@pytest.fixture
def open_screen():
    """`async with open_screen(path, "6") as (app, pilot, screen)`: the app on `path` (a terminal of `size`, 100x30
    unless given; other keywords go to KdApp), the screen `key` opens (none: the first) the current one."""

    @contextlib.asynccontextmanager
    async def opened(path, key: str | None = None, *, size: tuple[int, int] = (100, 30), **app_options):
        app = KdApp(path, **app_options)
        async with app.run_test(size=size) as pilot:
            if key:
                await pilot.press(key)
            yield app, pilot, app.screen

    return opened
