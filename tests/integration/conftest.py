import os
import shutil

import pytest

from tests.integration.sandbox import Sandbox


@pytest.fixture(autouse=True, scope="session")
def _root_and_tools():
    # Integration tests never skip: without root or the tools they fail loudly.
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (run `make test` as root)", pytrace=False)
    for tool in ("nft", "ip", "nsenter"):
        if shutil.which(tool) is None:
            pytest.fail(f"integration tests need `{tool}`: `make test` installs it", pytrace=False)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.netns)


@pytest.fixture
def sandbox(tmp_path):
    sb = Sandbox(tmp_path)
    sb.setup()
    try:
        yield sb
    finally:
        sb.teardown()
