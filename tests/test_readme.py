"""Every `python launch.py` command of README.md and of the markdown pages under docs/ (the guide, the
studies), run in plan mode (`plan=true`): a command the documentation shows must compose and validate,
so one that would stop with exit code 2 (or that Hydra refuses) fails here. The plans run in this
process (launch.py's `plan_command`), one test a command.

Commands are read, page by page, from the bash blocks (a line, or the part after `&&`, that starts `python launch.py`,
with `\\` continuations joined and the `NAME="..."` variables set before it expanded) and from inline code
spans that start with `python launch.py`. Paths the pages give under /data/ are replaced by small
files in the published formats, written by the test (tests/helpers.py: write_paper_inputs), and a
classifier folder under /models/ (`scorer.model=/models/...`) by a tiny classifier with the label the
command scores (helpers.tiny_classifier); every job plans against a fresh root, so no cache of this
checkout shows."""

from __future__ import annotations

import re
import shlex

import pytest

from helpers import PAPER_INPUTS, REPO, tiny_classifier, write_paper_inputs

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]  # the front door, then the guide and the studies
LAUNCH = "python launch.py"


def readme_commands() -> list[list[str]]:
    """The arguments of every `python launch.py` command of the README and the pages under docs/, in order."""
    return [args for page in PAGES for args in page_commands(page.read_text())]


def page_commands(text: str) -> list[list[str]]:
    """The arguments of every `python launch.py` command in one page's markdown, in order."""
    commands, variables = [], {}  # a variable set in one block stays set for the next, as in the reader's shell
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            assignment = re.fullmatch(r"([A-Z_]+)=(.*)", line)
            if assignment:
                variables[assignment[1]] = shlex.split(assignment[2])[0]
                continue
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith(LAUNCH):
                    expanded = re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables[m[1]], part[len(LAUNCH):])
                    commands.append(shlex.split(expanded, comments=True))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(rf"`({re.escape(LAUNCH)}\b[^`]*)`", prose):
        commands.append(shlex.split(" ".join(span.split())[len(LAUNCH):]))
    return commands


COMMANDS = [list(args) for args in dict.fromkeys(map(tuple, readme_commands()))]  # each command once


def with_local_inputs(args: list[str], folder) -> list[str]:
    """`args` with every data.corpora input under /data/ replaced by a file written in `folder`, and a
    scorer.model under /models/ by a tiny classifier whose labels hold the command's scorer.toxic_label."""
    names, out = {}, []
    label = next((a.partition("=")[2] for a in args if a.startswith("scorer.toxic_label=")), "toxicity")
    for arg in args:
        key, _, value = arg.partition("=")
        part = key.removeprefix("data.corpora.")
        if part in PAPER_INPUTS and value.startswith("/data/"):
            names[part] = value.lstrip("/")
            arg = f"{key}={folder / names[part]}"
        if key == "scorer.model" and value.startswith("/models/"):
            arg = f"{key}={tiny_classifier(folder / value.lstrip('/'), labels=('neutral', label))}"
        out.append(arg)
    if names:
        write_paper_inputs(folder, names=names)
    return out


def test_the_readme_shows_the_commands_it_should():
    assert len(COMMANDS) >= 20
    assert any("experiment=paper_olmo1b" in args and "plan=true" in args for args in COMMANDS)
    assert sum("experiment=paper_olmo1b" in args and any(a.startswith("hydra/launcher=slurm") for a in args)
               for args in COMMANDS) == 4  # the plan under phase 1's launcher, and the three phases


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(args)[:80] or "(defaults)" for args in COMMANDS])
def test_every_readme_command_plans(args, launch_module, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETOX_HASH_CACHE", str(tmp_path / "hashes.json"))
    args = with_local_inputs(args, tmp_path / "inputs")
    code = launch_module.plan_command([*args, f"root={tmp_path / 'root'}", *(["plan=true"] if "plan=true" not in args else [])])
    out = capsys.readouterr()
    assert code == 0, f"python launch.py {' '.join(args)} plan=true: exit code {code}\n{out.err[-2000:]}"
    jobs = [line for line in out.out.splitlines() if line.startswith("job ")]
    assert jobs and "nothing run" in out.out
    if "experiment=paper_olmo1b" in args and "-m" in args and not any("treatment=" in a for a in args):
        assert len(jobs) == 108  # the paper's grid: 6 ratios x 2 seeds x 9 treatments
    assert not (tmp_path / "root").exists()  # a plan writes nothing
