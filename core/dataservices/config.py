"""Where Data Services is: the URL, configured the way Biosero sites do it.

Sources, first found wins:

1. the ``--data-services-url`` command-line flag;
2. the ``LABCONSOLE_DATA_SERVICES_URL`` environment variable;
3. ``config.ini``::

       [DATA SERVICES]
       url = http://10.0.0.234:8105

A URL must be ``http`` or ``https`` with a host, and an origin only (no path, query or user
info): clients append ``/api/v2.0/...`` to it, and biosero-data-models needs a bare origin.
A bad value raises :class:`~core.errors.ConfigError` naming where it came from: the flag, the
variable, or the file, ``DATA SERVICES.url`` and the line. Messages never repeat a password
given in a URL (``http://user:***@host``).

The token the embedded server requires (:func:`resolve_token`) comes from ``--token``, from a
file (``--token-file PATH``, so it does not show in the process list) or from the
``LABCONSOLE_TOKEN`` environment variable.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from core.errors import ConfigError, InputError
from core.inifile import line_of

log = logging.getLogger(__name__)

URL_FLAG = "--data-services-url"
TOKEN_FLAG = "--token"
TOKEN_FILE_FLAG = "--token-file"
TOKEN_ENV = "LABCONSOLE_TOKEN"
URL_ENV = "LABCONSOLE_DATA_SERVICES_URL"
SECTION = "DATA SERVICES"
KEY = "url"
FIELD = f"{SECTION}.{KEY}"


@dataclass(frozen=True)
class DataServicesSettings:
    """The resolved URL and where it came from (for status messages and errors)."""

    url: str
    source: str
    """``--data-services-url``, ``LABCONSOLE_DATA_SERVICES_URL`` or ``<file>:<line>``."""


_USERINFO = re.compile(r"(//[^/@:\s]*):[^/\s]*@")


def redact_url(text: str) -> str:
    """``text`` with the password of any ``user:password@`` replaced by ``***``."""
    return _USERINFO.sub(r"\1:***@", text)


def check_url(text: str) -> str:
    """Return ``text`` as a normalised origin (``http://host:port``), or raise ValueError saying why.

    The messages show the URL with its password redacted.
    """
    shown = redact_url(text)
    value = text.strip()
    if not value:
        raise ValueError("is empty; expected e.g. http://10.0.0.234:8105")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{shown!r} is not an http:// or https:// URL "
                         "(expected e.g. http://10.0.0.234:8105)")
    if not parts.hostname:
        raise ValueError(f"{shown!r} has no host (expected e.g. http://10.0.0.234:8105)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown!r} has an invalid port (expected 1-65535)") from None
    if port == 0:
        raise ValueError(f"{shown!r} has port 0 (expected 1-65535)")
    if parts.username or parts.password:
        raise ValueError(f"{shown!r} contains user info; Data Services takes no credentials in the URL")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"{shown!r} has a path, query or fragment; give only the origin, e.g. "
                         f"{parts.scheme}://{parts.netloc}")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def _read_ini(path: str | os.PathLike[str]) -> tuple[str, configparser.ConfigParser] | None:
    """(text, parsed) of a config.ini, or None if there is no such file; a bad file raises."""
    file = Path(path)
    if not file.exists():
        return None
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.at(f"cannot read config file: {exc}", file=file) from None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(file))
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError.at("the file must start with a [SECTION] header such as "
                             f"[{SECTION}]", file=file, line=exc.lineno) from None
    except configparser.ParsingError as exc:
        line, content = exc.errors[0] if exc.errors else (None, "")
        raise ConfigError.at(f"cannot parse line {content!s} (expected 'key = value')",
                             file=file, line=line) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError.at(f"'{exc.option}' is given twice in [{exc.section}]", file=file,
                             field=f"{exc.section}.{exc.option}", line=exc.lineno) from None
    except configparser.Error as exc:
        raise ConfigError.at(str(exc), file=file) from None
    return text, parser


def url_from_ini(path: str | os.PathLike[str]) -> DataServicesSettings | None:
    """The ``[DATA SERVICES] url`` of a config.ini, or None if the file, section or key is absent."""
    file = Path(path)
    read = _read_ini(file)
    if read is None:
        return None
    text, parser = read
    section = next((s for s in parser.sections() if s.strip().upper() == SECTION), None)
    if section is None or not parser.has_option(section, KEY):
        return None
    line = line_of(text, section, KEY)
    try:
        url = check_url(parser.get(section, KEY))
    except ValueError as exc:
        raise ConfigError.at(f"Data Services URL {exc}", file=file, field=FIELD, line=line) from None
    return DataServicesSettings(url, f"{file}:{line}" if line else str(file))


def resolve_url(flag: str | None = None, *, config_file: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> DataServicesSettings | None:
    """The Data Services URL from flag, environment or config.ini (in that order), or None."""
    env = os.environ if environ is None else environ
    if flag is not None:
        return DataServicesSettings(_checked(flag, URL_FLAG), URL_FLAG)
    if env.get(URL_ENV, "").strip():  # set but empty counts as unset, as for most variables
        return DataServicesSettings(_checked(env[URL_ENV], URL_ENV), URL_ENV)
    if config_file is not None:
        return url_from_ini(config_file)
    return None


def _checked(value: str, field: str) -> str:
    try:
        return check_url(value)
    except ValueError as exc:
        raise ConfigError.at(f"Data Services URL {exc}", field=field) from None


def resolve_token(flag: str | None = None, *, token_file: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> str | None:
    """The embedded server's token from ``--token``, ``--token-file`` or ``$LABCONSOLE_TOKEN``.

    A token file holds the token on its first line (surrounding whitespace is ignored). Errors
    name the source but never show the token.
    """
    env = os.environ if environ is None else environ
    if flag is not None and token_file is not None:
        raise ConfigError.at(f"give either {TOKEN_FLAG} or {TOKEN_FILE_FLAG}, not both",
                             field=TOKEN_FLAG)
    if flag is not None:
        return _checked_token(flag, TOKEN_FLAG)
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8-sig")
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError.at(f"cannot read the token file: {why}", file=path,
                                 field=TOKEN_FILE_FLAG) from None
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s: the token file can be read by other users; chmod 600 it", path)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > 1:
            raise ConfigError.at("the token file must hold the token on one line", file=path,
                                 field=TOKEN_FILE_FLAG)
        return _checked_token(lines[0] if lines else "", f"{TOKEN_FILE_FLAG} {path}")
    if env.get(TOKEN_ENV, "").strip():
        return _checked_token(env[TOKEN_ENV], TOKEN_ENV)
    return None


def _checked_token(value: str, source: str) -> str:
    token = value.strip()
    if not token:
        raise ConfigError.at("the token is empty", field=source)
    if not all(33 <= ord(ch) <= 126 for ch in token):
        raise ConfigError.at("the token must be printable ASCII without spaces (it is sent as "
                             "'Authorization: Bearer <token>')", field=source)
    return token


__all__ = ["DataServicesSettings", "TOKEN_ENV", "URL_ENV", "URL_FLAG", "check_url", "redact_url",
           "resolve_token", "resolve_url", "url_from_ini"]


MODULE_KEY = "module_id"


def _data_services_option(path: str | os.PathLike[str] | None, key: str) -> tuple[str, Callable[[str], InputError]] | None:
    """The raw value of ``[DATA SERVICES] key`` in a config.ini (None: no file, section or key)
    and a maker of errors that name the file, the field and the key's line."""
    if path is None:
        return None
    file = Path(path)
    read = _read_ini(file)
    if read is None:
        return None
    text, parser = read
    section = next((s for s in parser.sections() if s.strip().upper() == SECTION), None)
    if section is None or not parser.has_option(section, key):
        return None

    def error(message: str) -> InputError:
        return ConfigError.at(message, file=file, field=f"{SECTION}.{key}", line=line_of(text, section, key))

    return parser.get(section, key).strip(), error


def module_id_from_ini(path: str | os.PathLike[str] | None) -> str | None:
    """The ``[DATA SERVICES] module_id`` of a config.ini (this console's module id on a shared
    Data Services), or None; a bad id is refused naming the file and line."""
    found = _data_services_option(path, MODULE_KEY)
    if found is None:
        return None
    value, error = found
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", value):
        raise error(f"module id {value!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter")
    return value


LEASE_KEY = "lease"


def lease_from_ini(path: str | os.PathLike[str] | None) -> float | None:
    """The ``[DATA SERVICES] lease`` of a config.ini in seconds (how long a console's claims outlive
    its last heartbeat), or None; a bad value is refused naming the file and line."""
    found = _data_services_option(path, LEASE_KEY)
    if found is None:
        return None
    raw, error = found
    try:
        value = float(raw.removesuffix("s").strip())
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 86_400:
        raise error(f"lease {raw!r} must be a number of seconds from 1 to 86400 (e.g. 60)")
    return value


COMPATIBLE_KEY = "compatible"
_OPERATORS = "<>=!~"


def compatible_from_ini(path: str | os.PathLike[str] | None) -> dict[str, SpecifierSet]:
    """The ``[DATA SERVICES] compatible`` of a config.ini: template versions this console runs
    orders for besides the versions it has published (with its latest), or ``{}``.

    One entry per template, entries separated by ``;`` or new lines, each a template name and a
    version range in the version-specifier syntax pip uses (PEP 440), versions being whole
    numbers::

        [DATA SERVICES]
        compatible = Cell Prep>=2,<4; Plate Read==3

    Returns lower-case template name -> :class:`packaging.specifiers.SpecifierSet`. A bad entry
    is refused naming the file, the key's line and the entry.
    """
    found = _data_services_option(path, COMPATIBLE_KEY)
    if found is None:
        return {}
    raw, error = found
    out: dict[str, SpecifierSet] = {}
    for entry in (e.strip() for e in re.split(r"[;\n]", raw)):
        if not entry:
            continue
        cut = next((i for i, ch in enumerate(entry) if ch in _OPERATORS), None)
        if cut is None:
            raise error(f"{entry!r} has no version range; write a template name and a range, "
                        "e.g. 'Cell Prep>=2,<4'")
        name, spec_text = entry[:cut].strip(), entry[cut:].strip()
        if not name:
            raise error(f"{entry!r} names no template; write e.g. 'Cell Prep>=2,<4'")
        try:
            spec = SpecifierSet(spec_text)
        except InvalidSpecifier:
            raise error(f"{name}: {spec_text!r} is not a version range (use >=, >, <=, <, == or != "
                        "with whole numbers, separated by commas, e.g. '>=2,<4')") from None
        for item in spec:
            if not re.fullmatch(r"\d+", item.version) or item.operator not in ("==", "!=", "<", "<=", ">", ">="):
                raise error(f"{name}: {str(item)!r}: template versions are whole numbers compared with "
                            ">=, >, <=, <, == or != (e.g. '>=2,<4')")
        if not any(spec.contains(str(v)) for v in _candidates(spec)):
            raise error(f"{name}: {spec_text!r} matches no version")
        key = name.lower()
        if key in out:
            raise error(f"{name} is given twice; give one range per template (e.g. '>=2,<4,!=3')")
        out[key] = spec
    return out


def _candidates(spec: SpecifierSet) -> list[int]:
    """Versions that decide whether ``spec`` matches any whole number: each bound and its
    neighbours, and 1."""
    bounds = {int(item.version) for item in spec}
    return sorted({1} | {b + d for b in bounds for d in (-1, 0, 1) if b + d >= 1})
