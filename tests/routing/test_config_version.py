"""The routing config version reaches every process: through Redis when configured, through a
version file under DATA_DIR on the embedded defaults (docs/adr/0006-config-caching.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from routing import config
from routing.config import (
    CONFIG_VERSION_FILE,
    SnapshotCache,
    read_version_file,
    routing_config_changed,
)

ROOT = Path(__file__).resolve().parents[2]

embedded_only = pytest.mark.skipif(
    bool(django_settings.REDIS_URL), reason="the version file is used only without REDIS_URL"
)


def bump_in_another_process(data_dir: Path) -> None:
    """Call routing_config_changed() in a fresh Python process on the project's settings, as the
    Celery worker or a management command would."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "GATEWAY_DATA_DIR": str(data_dir),
    }
    env.pop("REDIS_URL", None)
    if django_settings.REDIS_URL:
        env["REDIS_URL"] = django_settings.REDIS_URL
    code = (
        "import django; django.setup()\n"
        "from routing.config import routing_config_changed\n"
        "routing_config_changed()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def data_dir(settings, tmp_path):
    """A DATA_DIR of this test's own, so its version file starts absent."""
    settings.DATA_DIR = tmp_path
    return tmp_path


@pytest.fixture
def counted_builds(monkeypatch):
    """The versions snapshots get built for (the real build, counted)."""
    builds: list[str] = []
    real_build = config.build_snapshot

    def counting_build(version: str) -> config.RoutingSnapshot:
        builds.append(version)
        return real_build(version)

    monkeypatch.setattr(config, "build_snapshot", counting_build)
    return builds


@pytest.mark.django_db(transaction=True)
async def test_change_in_another_process_reaches_this_one(settings, data_dir, counted_builds):
    """A change made by another process (a learning cycle in the Celery worker) makes this
    process's snapshot cache rebuild: via the version file without Redis, via Redis with it."""
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_CHECK_INTERVAL_S": 0}
    cache = SnapshotCache()  # not the one routing_config_changed() clears in this process
    before = await cache.get()
    assert await cache.get() is before

    bump_in_another_process(data_dir)

    after = await cache.get()
    assert after is not before and after.version != before.version
    assert counted_builds == [before.version, after.version]
    assert await cache.get() is after
    version_file = data_dir / CONFIG_VERSION_FILE
    if settings.REDIS_URL:
        assert not version_file.exists()  # Redis carries the version; no file involved
    else:
        assert version_file.exists()
        assert after.version == read_version_file() != "0"


@pytest.mark.django_db(transaction=True)
async def test_version_is_stable_while_nothing_changes(settings, data_dir, counted_builds):
    """Checks that find the same version keep the snapshot: one build, however often it is asked."""
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_CHECK_INTERVAL_S": 0}
    cache = SnapshotCache()
    first = await cache.get()
    for _ in range(20):
        assert await cache.get() is first
    assert counted_builds == [first.version]
    if not settings.REDIS_URL:
        assert first.version == "0"  # no file yet
        assert not (data_dir / CONFIG_VERSION_FILE).exists()  # reading never creates it


@embedded_only
def test_version_file_is_created_lazily_with_its_directory(settings, tmp_path):
    """A missing file is version "0"; the first change creates DATA_DIR and the file, and every
    change gives a new version."""
    settings.DATA_DIR = tmp_path / "not" / "yet"
    assert read_version_file() == "0"
    assert not settings.DATA_DIR.exists()
    routing_config_changed()
    first = read_version_file()
    assert first != "0"
    routing_config_changed()
    second = read_version_file()
    assert second not in ("0", first)
    assert os.listdir(settings.DATA_DIR) == [CONFIG_VERSION_FILE]  # no temporary files left


@embedded_only
def test_concurrent_changes_never_show_a_torn_version(settings, tmp_path):
    """Writers replace the file atomically: a reader sees whole tokens only, never a missing or
    half-written file, and no temporary file is left behind."""
    settings.DATA_DIR = tmp_path
    routing_config_changed()
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(read_version_file())

    def write() -> None:
        for _ in range(50):
            config.bump_version_file()

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write) for _ in range(6)]
    reader.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    reader.join()
    assert seen
    assert all(re.fullmatch(r"\d+-\d+-[0-9a-f]{12}", v) for v in seen), seen  # never empty or cut
    assert os.listdir(tmp_path) == [CONFIG_VERSION_FILE]
