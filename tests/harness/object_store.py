"""The object store (mail/blobstore.py) in a fresh folder for each test that writes message bodies.
Import the `objects_dir` fixture by name."""

import pytest

from mail import blobstore


@pytest.fixture
def objects_dir(settings, tmp_path):
    settings.AIEMAILY_OBJECTS_DIR = tmp_path / "objects"
    blobstore._storage.cache_clear()
    yield settings.AIEMAILY_OBJECTS_DIR
    blobstore._storage.cache_clear()
