"""No figure without its source: every block a study write-up quotes from a generated file is in that
file. A block is marked by the line `<!-- from: <path> -->` (relative to the repository) right above a
fenced block; each of its non-empty lines must be a line of the file (the file is what the command the
text names printed), and each number of the prose around it is one of the block's."""

import re

import pytest
from helpers import REPO

WRITE_UPS = sorted((REPO / "docs" / "studies").glob("*.md"))
QUOTE = re.compile(r"<!-- from: (\S+) -->\n```[a-z]*\n(.*?)```", re.S)


def quotes(path):
    return QUOTE.findall(path.read_text())


@pytest.mark.parametrize("write_up", [p for p in WRITE_UPS if quotes(p)], ids=lambda p: p.name)
def test_every_quoted_block_is_in_the_file_it_cites(write_up):
    for source, block in quotes(write_up):
        cited = REPO / source
        assert cited.is_file(), f"{write_up.name} cites {source}, which does not exist"
        lines = {line.strip() for line in cited.read_text().splitlines()}
        for line in block.splitlines():
            if line.strip():
                assert line.strip() in lines, f"{write_up.name}: {line.strip()!r} is not in {source}"


def test_the_cpu_study_quotes_its_regime_estimators_and_controls():
    cited = {source for source, _ in quotes(REPO / "docs" / "studies" / "cpu-claims.md")}
    assert {"docs/cpu_study_regime/regime.txt", "docs/cpu_study_regime/estimators.txt",
            "docs/cpu_study_regime/negative_control.txt"} <= cited
