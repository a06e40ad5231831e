"""The dataset docs cannot drift from the code: every `medtl data ...` command that
data_prep/*.md name (subcommands and options) exists in the CLI, and every registered dataset
builder has a section of data_prep/README.md (a heading naming it) with its command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from medtl import cli
from medtl.experiments.study import BUILDERS

COMMAND = re.compile(r"\bmedtl data\b(.*)")
SPAN = re.compile(r"`([^`]+)`")
HEADING = re.compile(r"^(#{1,6}) (.*)$")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_.-]*$")   # PATH, DIR, KIND: any value
CUT = (" #", " | ", ";", "&&")                     # a comment or another command follows


def _code(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every code-block line (indented or fenced; backslash
    continuations joined) and every inline code span (which may run over a line break)."""
    out: list[tuple[int, str]] = []
    prose: list[str] = []          # the text with its code blocks blanked out
    fenced, pending, start = False, "", 0
    for n, line in enumerate(text.splitlines(), start=1):
        code = fenced or line.startswith("    ") or bool(pending)
        if line.lstrip().startswith("```"):
            fenced, code = not fenced, True
        elif code:
            start = start if pending else n
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
            else:
                out.append((start, pending + line.strip()))
                pending = ""
        prose.append("" if code else line)
    joined = "\n".join(prose)
    for m in SPAN.finditer(joined):
        if "\n\n" not in m.group(1):
            out.append((joined.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())))
    return sorted(out, key=lambda item: item[0])


def commands(text: str) -> list[tuple[int, list[str]]]:
    """(line, words after `medtl data`) of every command the text names."""
    found = []
    for n, code in _code(text):
        for m in COMMAND.finditer(code):
            rest = m.group(1)
            for cut in CUT:
                rest = rest.split(cut)[0]
            found.append((n, rest.split()))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _alternatives(word: str) -> list[str]:
    """`{a,b}` or `a|b`: each alternative; else the word."""
    return [w for w in re.split(r"[{},|]", word) if w]


def problems(words: list[str], parser: argparse.ArgumentParser, path: str = "medtl data"
             ) -> list[str]:
    """What in `medtl data <words>` the CLI does not know (subcommands, then options)."""
    for k, word in enumerate(words):
        choices = _subparsers(parser)
        if word.startswith("-") or not choices:
            break
        if PLACEHOLDER.match(word):  # any of the choices: its options are some choice's
            known = set().union(*(_options(p) for p in choices.values()))
            return [f"{path} {word} {w}: no {word} has this option" for w in words[k + 1:]
                    if w.startswith("--") and w.split("=")[0] not in known]
        out = []
        for alt in _alternatives(word):
            if alt not in choices:
                out.append(f"{path} {alt}: no such command (known: {', '.join(sorted(choices))})")
            else:
                out.extend(problems(words[k + 1:], choices[alt], f"{path} {alt}"))
        return out
    known = _options(parser)
    return [f"{path} {w}: no such option (known: {', '.join(sorted(known))})"
            for w in words if w.startswith("--") and w.split("=")[0] not in known]


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body up to the next heading of the same or a higher level)."""
    lines = text.splitlines()
    heads = [(i, len(m.group(1)), m.group(2)) for i, line in enumerate(lines)
             if (m := HEADING.match(line))]
    out = []
    for j, (i, level, title) in enumerate(heads):
        end = next((k for k, lev, _ in heads[j + 1:] if lev <= level), len(lines))
        out.append((title, "\n".join(lines[i + 1:end])))
    return out


@pytest.fixture(scope="module")
def data_parser() -> argparse.ArgumentParser:
    return _subparsers(cli.build_parser())["data"]


def _docs(repo: Path) -> list[Path]:
    return sorted((repo / "data_prep").glob("*.md"))


def test_every_documented_data_command_exists(repo, data_parser):
    checked, bad = 0, []
    for doc in _docs(repo):
        for n, words in commands(doc.read_text()):
            checked += 1
            bad.extend(f"{doc.relative_to(repo)}:{n}: {p}" for p in problems(words, data_parser))
    assert not bad, "\n".join(bad)
    assert checked >= 20, f"only {checked} `medtl data` commands found in data_prep/*.md"


def test_every_dataset_builder_has_a_section_with_its_command(repo):
    text = (repo / "data_prep" / "README.md").read_text()
    found = sections(text)
    missing = []
    for name, _ in BUILDERS.items():
        mine = [body for title, body in found if f"`{name}`" in title]
        if not mine:
            missing.append(f"{name}: no heading of data_prep/README.md names `{name}`")
        elif not any(commands(body) for body in mine):
            missing.append(f"{name}: its section names no `medtl data` command")
    assert not missing, "\n".join(missing)


def test_the_checker_catches_drift(data_parser):
    """The checks above are not vacuous: a renamed command or option is found."""
    text = ("Build it with `medtl data ln --root R --out D`, then\n\n"
            "    .venv/bin/python -m medtl data tajbakhsh polyp \\\n"
            "        --manifest m.csv --out D   # a comment --not-an-option\n\n"
            "`medtl data {ln,ild} --set k=v`, `medtl data phantoms KIND --out DIR`, "
            "`medtl data lnx --root R`, `medtl data ild --rot R`, "
            "`medtl data tajbakhsh polyps`, `medtl data check PATH | head`\n")
    found = commands(text)
    assert [w[:2] for _, w in found] == [["ln", "--root"], ["tajbakhsh", "polyp"],
                                         ["{ln,ild}", "--set"], ["phantoms", "KIND"],
                                         ["lnx", "--root"], ["ild", "--rot"],
                                         ["tajbakhsh", "polyps"], ["check", "PATH"]]
    assert found[1] == (3, ["tajbakhsh", "polyp", "--manifest", "m.csv", "--out", "D"])
    reports = [problems(words, data_parser) for _, words in found]
    assert [len(r) for r in reports] == [0, 0, 0, 0, 1, 1, 1, 0]
    assert "medtl data lnx: no such command" in reports[4][0]
    assert "medtl data ild --rot: no such option" in reports[5][0]
    assert "medtl data tajbakhsh polyps: no such command" in reports[6][0]
    doc = "# A\n## B (`shin_ln`)\ntext\n### C\nmore\n## D\nother\n"
    assert sections(doc)[1] == ("B (`shin_ln`)", "text\n### C\nmore")
