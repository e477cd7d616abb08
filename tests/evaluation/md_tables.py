"""Markdown tables as a renderer sees them (markdown-it-py, GFM tables), for the tests
that check generated reports render: a pipe inside a cell splits it, and a header with
more cells than the delimiter row is no table at all (the block renders as a paragraph)."""

from __future__ import annotations

import dataclasses
import re

from markdown_it import MarkdownIt


@dataclasses.dataclass
class Table:
    header: list[str]
    rows: list[list[str]]  # as rendered: markdown-it pads or cuts every row to the header's width
    source_cells: list[int]  # per body row, the cells its source line holds (GFM splitting)


def source_cell_count(line: str) -> int:
    """Cells of one table row as GFM splits it: at every pipe not escaped by a backslash,
    leading and trailing pipes dropped."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return len(re.split(r"(?<!\\)\|", body))


def parse_tables(text: str) -> list[Table]:
    lines = text.splitlines()
    tables, table, row, row_line = [], None, None, None
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "table_open":
            table = Table([], [], [])
        elif token.type == "tr_open":
            row, row_line = [], token.map[0]
        elif token.type == "inline" and row is not None:
            row.append(token.content)
        elif token.type == "tr_close":
            if not table.header:
                table.header = row
            else:
                table.rows.append(row)
                table.source_cells.append(source_cell_count(lines[row_line]))
            row = None
        elif token.type == "table_close":
            tables.append(table)
    return tables


def table_like_lines(text: str) -> int:
    """Lines that look like table rows (start with a pipe), outside fenced code."""
    count, fenced = 0, False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.lstrip().startswith("|"):
            count += 1
    return count


def assert_tables_render(text: str, at_least: int = 1) -> list[Table]:
    """Every table-like line belongs to a table that renders, and every body row's source
    has the header's cell count (markdown-it would silently pad or cut it)."""
    tables = parse_tables(text)
    assert len(tables) >= at_least, f"{len(tables)} tables render, expected at least {at_least}:\n{text}"
    rendered_lines = sum(2 + len(t.rows) for t in tables)  # header, delimiter, body
    assert rendered_lines == table_like_lines(text), (
        f"{table_like_lines(text) - rendered_lines} table line(s) do not render as a table:\n{text}")
    for t in tables:
        for row, n in zip(t.rows, t.source_cells):
            assert n == len(t.header), f"row {row} has {n} cells in its source, the header {len(t.header)}: {t.header}"
    return tables
