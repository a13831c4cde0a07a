import os
import shutil

import pytest

from tests.integration.sandbox import Sandbox

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                                reason="integration tests need root and nft (make test installs nft)")


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
