"""MkDocs hooks: parts of the documentation site generated from the code, so they cannot rot.

A page asks for them with one HTML comment on a line of its own:

``<!-- config-table: METHOD -->``
    the method's config keys and defaults, as ``imsa methods`` lists them;
``<!-- cli-help -->``
    the help of ``imsa`` and of every sub-command, from the parser the command line uses;
``<!-- method-table -->``
    every registered method with its one-line summary;
``<!-- json-table: PATH -->``
    a benchmark's JSON result file (path from the repository root) as tables: its
    scalars, then one table per list of records or mapping of records.

Docstrings written for Sphinx cite objects as ``:func:`name```; mkdocstrings renders the role
as text, so :func:`on_page_content` drops it and keeps the code span.

An unknown method or directive fails the build (``mkdocs build --strict`` runs in CI).
"""

from __future__ import annotations

import argparse
import io
import json
import posixpath
import re
from contextlib import redirect_stdout
from pathlib import Path

DIRECTIVE = re.compile(r"^<!-- (config-table|cli-help|method-table|json-table)(?::\s*([\w./-]+))? -->$", re.MULTILINE)
ROOT = Path(__file__).resolve().parents[1]


def _entries():
    from imsa.catalogue import method_entries

    return {entry.name: entry for entry in method_entries()}


def _config_table(name: str, page: str) -> str:
    entries = _entries()
    if name not in entries:
        raise ValueError(f"{page}: config-table names unknown method {name!r}; registered: {', '.join(sorted(entries))}")
    rows = [f"| `{key}` | `{value}` |" for key, value in entries[name].defaults]
    return "\n".join(["| key | default |", "|---|---|", *rows])


def _method_table(page: str) -> str:
    here = posixpath.dirname(page)
    rows = [f"| [`{name}`]({posixpath.relpath(f'methods/{name}.md', here or '.')}) | {entry.summary} |" for name, entry in sorted(_entries().items())]
    return "\n".join(["| method | what it is |", "|---|---|", *rows])


def _help(parser: argparse.ArgumentParser) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        parser.print_help()
    return out.getvalue().rstrip()


def _subparsers(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subparsers(sub, f"{prefix} {name}")


def _cli_help() -> str:
    from imsa.cli import build_parser

    parser = build_parser()
    blocks = [f"## `imsa`\n\n```text\n{_help(parser)}\n```"]
    for command, sub in _subparsers(parser, "imsa"):
        blocks.append(f"## `{command}`\n\n```text\n{_help(sub)}\n```")
    return "\n\n".join(blocks)


def _flat(record, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _records_table(rows: list[tuple[str, dict]], label: str) -> str:
    columns = list(dict.fromkeys(key for _, record in rows for key in record))
    lines = [f"| {label} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_cell(record.get(column, "")) for column in columns) + " |" for name, record in rows]
    return "\n".join(lines)


def _json_table(path: str, page: str) -> str:
    file = ROOT / path
    if not file.is_file():
        raise ValueError(f"{page}: json-table names {path}, which does not exist")
    data = json.loads(file.read_text())
    scalars = {key: value for key, value in data.items() if not isinstance(value, (dict, list))}
    blocks = [f"`{path}`"]
    if scalars:
        blocks.append(_records_table([(key, {"value": value}) for key, value in scalars.items()], "key"))
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            blocks.append(f"**{key}**\n\n" + _records_table([(str(i), _flat(item)) for i, item in enumerate(value)], "#"))
        elif isinstance(value, dict) and value and all(isinstance(item, dict) for item in value.values()):
            blocks.append(f"**{key}**\n\n" + _records_table([(name, _flat(item)) for name, item in value.items()], key))
        elif isinstance(value, (dict, list)):
            blocks.append(f"**{key}**: `{json.dumps(value)}`")
    return "\n\n".join(blocks)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace each directive comment of a page with what it names."""

    def replace(match: re.Match) -> str:
        kind, argument = match.group(1), match.group(2)
        if kind == "config-table":
            if not argument:
                raise ValueError(f"{page.file.src_path}: config-table needs a method name")
            return _config_table(argument, page.file.src_path)
        if kind == "json-table":
            return _json_table(argument or "", page.file.src_path)
        if kind == "method-table":
            return _method_table(page.file.src_path)
        return _cli_help()

    return DIRECTIVE.sub(replace, markdown)


SPHINX_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj|exc):(?=<code>)")


def on_page_content(html: str, page, config, files) -> str:
    """Drop the Sphinx roles left in rendered docstrings (``:func:`` before a code span)."""
    return SPHINX_ROLE.sub("", html)
