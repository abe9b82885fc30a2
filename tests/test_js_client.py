"""The JavaScript client's unit tests (``tests/js/``, node's own test runner) as one pytest
test, so ``python -m pytest`` and CI run them with the rest."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_node_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: tests/js/ (client.js) not run; .ci/run installs it")
    # Files, not the folder: node 21+ reads --test arguments as globs, 18-20 as paths.
    files = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "tests" / "js").glob("*.test.mjs")
    )
    assert files, "no tests/js/*.test.mjs"
    run = subprocess.run(
        [node, "--test", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode != 0:
        pytest.fail(
            f"node --test {' '.join(files)} exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
        )
