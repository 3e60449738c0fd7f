"""Reading data files row by row: JSONL lines and JSON arrays as (number, object) pairs, with every
failure a one-line `UserError` naming the file and the line or row. The task loaders share it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tutorloop.errors import UserError


def read_rows(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) for each non-blank line; every failure is a one-line UserError."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    rows = []
    # bytes.splitlines only breaks on \n and \r; str.splitlines would also break inside JSON
    # strings holding U+2028 and friends.
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError:
            raise UserError(f"{path} line {lineno}: not valid UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {lineno}: not valid JSON ({one_line(e.msg)})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append((lineno, row))
    if not rows:
        raise UserError(f"{path}: contains no problems")
    return rows


def read_json_array(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number from 1, JSON object) for each element of a file that is one JSON array."""
    try:
        text = Path(path).read_bytes().decode("utf-8").lstrip("\ufeff")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} line {e.lineno}: not valid JSON ({one_line(e.msg)})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON array of problems, got a JSON {type(data).__name__} "
                        "(SVAMP is one array, not JSONL)")
    if not data:
        raise UserError(f"{path}: contains no problems")
    for row_no, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path} row {row_no}: expected a JSON object, got {type(row).__name__}")
    return list(enumerate(data, start=1))


def one_line(text: str) -> str:
    return " ".join(text.split())
