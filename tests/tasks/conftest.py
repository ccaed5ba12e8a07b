import pytest

from tests.tasks import helpers


@pytest.fixture(scope="session")
def synthetic_64(tmp_path_factory):
    return helpers.shared_synthetic(tmp_path_factory)


@pytest.fixture(scope="session")
def stage1_weights(tmp_path_factory):
    return helpers.save_stage1(str(tmp_path_factory.mktemp("stage1") / "stage1.safetensors"))
