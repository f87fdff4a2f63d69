"""Reading one section of a config.ini (as Biosero sites keep settings), with located errors."""

from __future__ import annotations

import configparser
from pathlib import Path

from core.errors import ConfigError


def read_section(path: Path | None, name: str) -> tuple[configparser.SectionProxy, str] | None:
    """``[name]`` of the file at ``path`` (section names in any case) and the file's text, or
    None when there is no such file or section. An unreadable or malformed file raises
    ConfigError naming it (and the line)."""
    if path is None or not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.at(f"cannot read config file: {exc}", file=path) from None
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise ConfigError.at(f"cannot parse: {exc}", file=path, line=getattr(exc, "lineno", None)) from None
    section = next((s for s in parser.sections() if s.strip().upper() == name.upper()), None)
    return (parser[section], text) if section is not None else None


def line_of(text: str, section: str, key: str) -> int | None:
    """The line number of ``key`` in ``[section]`` of a config.ini's text (for located errors)."""
    inside = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip().upper() == section.upper()
        elif inside and line.split("=", 1)[0].split(":", 1)[0].strip().lower() == key.lower():
            return number
    return None
