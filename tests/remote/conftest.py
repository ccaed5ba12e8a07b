import uuid

import pytest

from tests.remote.emulator import GcsEmulator


@pytest.fixture(scope="session")
def gcs_emulator():
    emulator = GcsEmulator()
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs(gcs_emulator, monkeypatch):
    """A fresh gs:// prefix on the local emulator, this process's clients pointed at it."""
    gcs_emulator.apply(monkeypatch)
    return f"gs://{gcs_emulator.bucket}/{uuid.uuid4().hex[:8]}"
