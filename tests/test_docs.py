"""The documentation cannot rot: the tutorials' commands run, every page a docstring or the
command line cites exists, the README stays short, and the public API has docstrings.

A tutorial page is run as a reader would follow it: its ``bash`` and ``python`` blocks in
order, in one fresh working directory that holds the repository's ``grids/``. HTML comments on the page (invisible on the site)
make the run small and say what it needs:

``<!-- test: sub "OLD" "NEW" -->``
    replace OLD by NEW in every later block of the page (fewer seeds, folds, epochs);
``<!-- test: skip REASON -->``
    do not run the next block (it needs the network, a GPU, the user's own files);
``<!-- test: data -->``
    the page reads the real datasets under ``../shared/datasets`` or ``$IMSA_DATA``;
    without them the page is skipped, saying so;
``<!-- test: media -->``
    the page needs the ``media`` extra and espeak-ng.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from conftest import real_data_root, skip_without_real_data

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOCS = PROJECT_ROOT / "docs"
TUTORIALS = [PROJECT_ROOT / "README.md", *sorted([DOCS / "getting-started.md", DOCS / "media.md", *(DOCS / "tutorials").glob("*.md")])]

DIRECTIVE = re.compile(r"<!-- test: (sub|skip|data|media)\b(.*?)-->")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def tutorial_steps(text: str):
    """The page's runnable blocks, substitutions applied, and what the page needs.

    Returns ``(needs, blocks)``: ``needs`` a set of ``data``/``media``; ``blocks`` a list of
    ``(language, code, skip_reason)`` in page order.
    """
    events = [(m.start(), "directive", m) for m in DIRECTIVE.finditer(text)]
    events += [(m.start(), "fence", m) for m in FENCE.finditer(text)]
    needs, subs, blocks, skip = set(), [], [], None
    for _, kind, match in sorted(events, key=lambda event: event[0]):
        if kind == "directive":
            name, argument = match.group(1), match.group(2).strip()
            if name == "sub":
                old, new = shlex.split(argument)
                subs.append((old, new))
            elif name == "skip":
                skip = argument or "marked skip"
            else:
                needs.add(name)
            continue
        language, code = match.group(1), match.group(2)
        if language not in ("bash", "python"):
            continue
        for old, new in subs:
            code = code.replace(old, new)
        blocks.append((language, code, skip))
        skip = None
    return needs, blocks


def _environment(tmp_path: Path, data: Path | None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["IMSA_CACHE"] = str(tmp_path / "cache")
    env["MPLBACKEND"] = "Agg"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("IMSA_DATA", None)
    if data is not None:
        env["IMSA_DATA"] = str(data)
    return env


SHELL_SYNTAX = set("|;<>$`(){}*?") | {"&"}


def shell_statements(code: str):
    """A bash block's statements: ``("imsa", [argv, ...])`` for a line of ``imsa`` commands joined
    by ``&&`` (run in this process: no interpreter start and torch import per command), else
    ``("bash", text)`` (a here-document with its body, or any other shell line)."""
    lines, i = code.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == heredoc.group(1))
            yield "bash", "\n".join(lines[i : end + 1])
            i = end + 1
            continue
        i += 1
        words = shlex.split(line, comments=True)
        if not words:
            continue
        commands = [[]]
        for word in words:
            if word == "&&":
                commands.append([])
            else:
                commands[-1].append(word)
        plain = not any(set(word) & SHELL_SYNTAX for word in words if word != "&&")
        if plain and all(command and command[0] == "imsa" for command in commands):
            yield "imsa", [command[1:] for command in commands]
        else:
            yield "bash", line


# The media page's test shares an xdist worker with the media tests, and so their extraction workers.
PAGES = [
    pytest.param(page, marks=[pytest.mark.xdist_group("media-corpus")] if page.name == "media.md" else [], id=str(page.relative_to(PROJECT_ROOT)))
    for page in TUTORIALS
]


@pytest.mark.parametrize("page", PAGES)
def test_tutorial_blocks_run(page: Path, tmp_path: Path, monkeypatch, capsys):
    import torch

    from imsa.cli import main

    needs, blocks = tutorial_steps(page.read_text())
    assert blocks, f"{page}: no bash or python block to run"
    data = None
    if "data" in needs:
        data = real_data_root()
        if data is None:
            skip_without_real_data(f"the data {page.name} reads")
    if "media" in needs:
        pytest.importorskip("av", reason=f"{page.name} needs the media extra: pip install -e '.[media]'")
        if shutil.which("espeak-ng") is None:
            pytest.skip(f"{page.name} makes demo clips with espeak-ng: apt-get install espeak-ng")
    env = _environment(tmp_path, data)
    for name in ("IMSA_DATA", "IMSA_CACHE", "MPLBACKEND"):
        monkeypatch.setenv(name, env[name]) if name in env else monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    (work / "grids").symlink_to(PROJECT_ROOT / "grids")  # the shipped grid files, as from the repository root
    monkeypatch.chdir(work)
    threads = torch.get_num_threads()
    ran = 0
    for number, (language, code, skip) in enumerate(blocks, 1):
        if skip:
            continue
        where = f"{page.name}, block {number} ({language}):\n{code}"
        if language == "python":  # in this process, in a namespace of its own, as a script
            try:
                exec(compile(code, f"{page.name}, block {number}", "exec"), {"__name__": "__main__"})
            except Exception:
                pytest.fail(f"{where}\n{traceback.format_exc()}")
            finally:
                torch.set_num_threads(threads)
            capsys.readouterr()
        for kind, statement in shell_statements(code) if language == "bash" else ():
            if kind == "imsa":
                for argv in statement:
                    try:
                        code_returned = main(argv)
                    except SystemExit as exit:  # argparse's answer to a wrong option
                        code_returned = exit.code
                    finally:
                        torch.set_num_threads(threads)
                    captured = capsys.readouterr()
                    assert code_returned == 0, (
                        f"{where}\nimsa {' '.join(argv)} returned {code_returned}\n--- stdout\n{captured.out[-3000:]}\n--- stderr\n{captured.err[-3000:]}"
                    )
            else:
                result = subprocess.run(["bash", "-euo", "pipefail", "-c", statement], cwd=work, env=env, capture_output=True, text=True, timeout=600)
                assert result.returncode == 0, f"{where}\n{statement} failed\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        ran += 1
    assert ran, f"{page}: every block is skipped"


def test_shell_statements_run_imsa_in_process_and_the_rest_in_bash():
    code = "imsa run --seeds 1  # a comment\nimsa grid run g.yaml && imsa report runs/g\ncat > g.yaml <<'EOF'\nmethods: [x]\nEOF\nhead -3 out.csv | cat\n"
    assert list(shell_statements(code)) == [
        ("imsa", [["run", "--seeds", "1"]]),
        ("imsa", [["grid", "run", "g.yaml"], ["report", "runs/g"]]),
        ("bash", "cat > g.yaml <<'EOF'\nmethods: [x]\nEOF"),
        ("bash", "head -3 out.csv | cat"),
    ]


def test_the_runner_applies_substitutions_and_skips():
    page = '<!-- test: sub "--seeds 1 2 3" "--seeds 1" -->\n```bash\nimsa run --seeds 1 2 3\n```\n<!-- test: skip no network -->\n```bash\nimsa data download x\n```\n```text\nnot run\n```\n'
    needs, blocks = tutorial_steps(page)
    assert needs == set()
    assert blocks == [("bash", "imsa run --seeds 1\n", None), ("bash", "imsa data download x\n", "no network")]


# -- every page that is cited exists ---------------------------------------------------------------

CITED_PAGE = re.compile(r"docs/[\w/.-]+?\.md")


def test_pages_cited_by_the_code_exist():
    missing = []
    for path in [
        *(PROJECT_ROOT / "src").rglob("*.py"),
        *(PROJECT_ROOT / "src").rglob("*.yaml"),
        *(PROJECT_ROOT / "benchmarks").rglob("*.py"),
        PROJECT_ROOT / "README.md",
    ]:
        for cited in set(CITED_PAGE.findall(path.read_text())):
            if not (PROJECT_ROOT / cited).is_file():
                missing.append(f"{path.relative_to(PROJECT_ROOT)} cites {cited}")
    assert not missing, "\n".join(missing)


def test_every_page_is_in_the_site_navigation():
    config = (PROJECT_ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r"([\w/.-]+\.md)\s*$", config, re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - listed)}"
    assert listed - pages == set(), f"mkdocs.yml lists pages that do not exist: {sorted(listed - pages)}"


def test_every_registered_method_has_its_page():
    from imsa.catalogue import method_names

    missing = [name for name in method_names() if not (DOCS / "methods" / f"{name}.md").is_file()]
    assert not missing, f"methods without a page under docs/methods/: {missing}"


def test_the_readme_is_short_and_holds_the_two_setup_commands():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert 'pip install -c constraints.txt -e ".[test]" && imsa run' in readme
    assert "python -m pytest -q" in readme


# -- the command line points to the pages ---------------------------------------------------------


def _commands():
    import argparse

    from imsa.cli import build_parser

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    yield f"{prefix} {name}", sub, helps.get(name)
                    yield from walk(sub, f"{prefix} {name}")

    return build_parser(), list(walk(build_parser(), "imsa"))


def test_every_command_says_what_it_does_and_names_its_page():
    parser, commands = _commands()
    assert "docs/" in (parser.epilog or "")
    for command, sub, summary in commands:
        assert summary and len(summary) <= 150, f"{command}: one line of help, not {summary!r}"
        pages = CITED_PAGE.findall(sub.epilog or "")
        assert pages, f"{command}: its help names no documentation page"
        for page in pages:
            assert (PROJECT_ROOT / page).is_file(), f"{command} cites {page}, which does not exist"


# -- docstring coverage of the public API ---------------------------------------------------------

COVERAGE_MINIMUM = 0.95


def public_api_objects():
    """``(qualified name, object)`` for everything ``imsa`` exports, the public members of
    its exported classes and of the method class every registered method returns, and the
    classes a user meets through them (datasets, predictions, the method contract)."""
    import imsa
    from imsa.data.dataset import Dataset
    from imsa.methods import list_methods
    from imsa.methods.base import Method
    from imsa.methods.registry import METHODS
    from imsa.predictions import Predictions
    from imsa.testing import check_method

    items = [(f"imsa.{name}", getattr(imsa, name)) for name in imsa.__all__ if name != "__version__"]
    items += [("imsa.testing.check_method", check_method)]
    classes = [obj for _, obj in items if inspect.isclass(obj)] + [Dataset, Predictions, Method]
    classes += [METHODS[name] for name in list_methods()]
    for cls in dict.fromkeys(classes):
        items.append((f"{cls.__module__}.{cls.__qualname__}", cls))
        for name, member in vars(cls).items():
            if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, (property, classmethod, staticmethod))):
                continue
            items.append((f"{cls.__module__}.{cls.__qualname__}.{name}", member))
    return items


def _has_docstring(obj) -> bool:
    target = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
    return bool((inspect.getdoc(target) or "").strip())


def test_public_api_docstring_coverage():
    items = public_api_objects()
    missing = [name for name, obj in items if not _has_docstring(obj)]
    coverage = 1 - len(missing) / len(items)
    assert coverage >= COVERAGE_MINIMUM, f"docstring coverage {coverage:.1%} of {len(items)} public objects; missing:\n" + "\n".join(missing)


def test_every_command_line_option_has_help():
    parser, commands = _commands()
    undocumented = []
    for command, sub, _ in [("imsa", parser, None), *commands]:
        for action in sub._actions:
            if action.help is None and action.dest not in ("help", "command") and not action.dest.endswith("command"):
                undocumented.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    assert not undocumented, "options without help:\n" + "\n".join(undocumented)


def test_the_site_api_page_documents_every_export():
    import imsa

    page = (DOCS / "api.md").read_text()
    for name in imsa.__all__:
        if name == "__version__":
            continue
        module = imsa._PUBLIC[name]
        assert f"::: {module}.{name}" in page, f"docs/api.md does not document imsa.{name} ({module})"


def test_pages_use_only_known_directives():
    for page in DOCS.rglob("*.md"):
        for directive in re.findall(r"<!-- ([\w-]+):?", page.read_text()):
            assert directive in ("test", "config-table", "cli-help", "method-table", "json-table"), f"{page}: unknown directive {directive}"
