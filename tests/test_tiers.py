"""CI runs every test exactly once: README.md's test command (the tests a user runs to trust an install)
and then the rest, both in .ci/run. Each command's selection is collected as that command collects it
(pytest's collection, in a subprocess, with the command's own arguments, read from README.md and
.ci/run); the selections must be disjoint, none empty, and together the whole collection (pytest with
no selection and no addopts). A test that a new marker or option leaves in neither tier fails here."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from helpers import REPO

PYTEST = ["python", "-m", "pytest"]
# Every selection collected in one process (importing the test modules once): the ids pytest would run.
COLLECT = """
import json, sys
import pytest

class Selected:
    def pytest_collection_finish(self, session):  # after the selection (-m, -k, deselect) is applied
        self.ids = [item.nodeid for item in session.items]

found = []
for args in json.loads(sys.argv[1]):
    selected = Selected()
    code = pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", *args], plugins=[selected])
    found.append({"code": int(code), "ids": getattr(selected, "ids", [])})
print("SELECTED " + json.dumps(found))
"""


def pytest_args(line: str) -> list[str]:
    """The arguments after `python -m pytest` in a shell line, up to the end of that command."""
    words = shlex.split(line, comments=True)
    start = next(i for i in range(len(words)) if words[i:i + len(PYTEST)] == PYTEST) + len(PYTEST)
    end = next((i for i in range(start, len(words)) if words[i] in ("&&", "||", ";", "|")), len(words))
    return words[start:end]


def readme_command() -> list[str]:
    """The pytest arguments of README.md's install-and-test line."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    [line] = [line for block in blocks for line in block.splitlines() if '".[test]"' in line and "pytest" in line]
    return pytest_args(line)


def ci_commands() -> list[list[str]]:
    """The pytest arguments of each test command of .ci/run, in order."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [pytest_args(line) for line in lines if " ".join(PYTEST) in line and not line.lstrip().startswith("#")]


def collected(*selections: list[str]) -> list[list[str]]:
    """For each list of pytest arguments, the test ids `python -m pytest ARGS` would run."""
    done = subprocess.run([sys.executable, "-c", COLLECT, json.dumps(selections)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    [line] = [line for line in done.stdout.splitlines() if line.startswith("SELECTED ")] or [done.stdout[-3000:]]
    found = json.loads(line.removeprefix("SELECTED "))
    for args, selection in zip(selections, found):
        assert selection["code"] == 0 and selection["ids"], f"pytest {shlex.join(args)} selects no test"
    return [selection["ids"] for selection in found]


@pytest.mark.slow  # a check of CI, not of an install: it collects the suite three times
def test_the_readme_command_and_the_rest_of_ci_run_every_test_once():
    readme, tiers = readme_command(), ci_commands()
    assert tiers[0] == readme, ".ci/run runs README.md's test command first"
    assert len(tiers) >= 2, ".ci/run runs the tests the README's command leaves out after it"
    whole, *selections = collected(["-o", "addopts="], *tiers)
    assert len(set(whole)) == len(whole)
    counted = [test for selection in selections for test in selection]
    twice = sorted({test for test in counted if counted.count(test) > 1})
    assert not twice, f"in more than one tier of .ci/run: {twice}"
    missing = sorted(set(whole) - set(counted))
    assert not missing, f"in no tier of .ci/run (neither README.md's test command nor the rest): {missing}"
    assert sorted(counted) == sorted(whole)
