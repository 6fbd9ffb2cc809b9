"""No figure without its source: every block a study write-up (docs/studies/, and the README's summary)
quotes from a generated file is in that file. A block is marked by the line `<!-- from: <path> -->`
(relative to the repository) right above a fenced block; each of its non-empty lines must be a line of
the file (the file is what the command the text names printed). A table that gathers figures from
several files is marked by `<!-- numbers from: <path> <path> ... -->` right above it: every number in its
last column (detox's own) is in one of them."""

import re

import pytest
from helpers import REPO

WRITE_UPS = sorted((REPO / "docs" / "studies").glob("*.md")) + [REPO / "README.md"]
QUOTE = re.compile(r"<!-- from: (\S+) -->\n```[a-z]*\n(.*?)```", re.S)
GATHERED = re.compile(r"<!-- numbers from: (.+?) -->\n((?:\|.*\n)+)")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


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
    write_up = REPO / "docs" / "studies" / "cpu-claims.md"
    cited = {source for source, _ in quotes(write_up)}
    assert {"docs/cpu_study_regime/regime.txt", "docs/cpu_study_regime/estimators.txt",
            "docs/cpu_study_regime/negative_control.txt", "docs/cpu_study_regime/negative_control_study.txt"} <= cited
    assert any("positive control" in table for _, table in gathered(write_up))  # the claims table is held to its files


def gathered(path):
    return GATHERED.findall(path.read_text())


def missing_numbers(table: str, cited: str) -> list[str]:
    """The numbers of the table's last column (past its header and rule) that the cited text lacks."""
    numbers = set(NUMBER.findall(cited))
    cells = [row.strip().strip("|").split("|")[-1] for row in table.splitlines()[2:]]
    return [n for cell in cells for n in NUMBER.findall(cell) if n not in numbers]


@pytest.mark.parametrize("write_up", [p for p in WRITE_UPS if gathered(p)], ids=lambda p: p.name)
def test_every_number_of_a_gathered_table_is_in_a_file_it_cites(write_up):
    for sources, table in gathered(write_up):
        for source in sources.split():
            assert (REPO / source).is_file(), f"{write_up.name} cites {source}, which does not exist"
        cited = "\n".join((REPO / source).read_text() for source in sources.split())
        assert not missing_numbers(table, cited), f"{write_up.name}: in none of {sources}"


def test_a_number_the_files_do_not_hold_is_caught():
    text = "<!-- numbers from: a.csv -->\n| claim | paper | here |\n| --- | --- | --- |\n| a | 12 | 39.2 -> 44.1 |\n"
    ((sources, table),) = GATHERED.findall(text)
    assert sources == "a.csv" and missing_numbers(table, "x,39.2,+4.1 [+1.0, +7.2]") == ["44.1"]
