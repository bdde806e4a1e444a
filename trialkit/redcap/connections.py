"""Named REDCap connections, kept in the study folder's `trialkit.toml`.

    [redcap.dev]
    url = "http://127.0.0.1:8765/api/"
    token_env = "KAP_DEV_TOKEN"

    [redcap.prod]
    url = "https://redcap.example.org/api/"
    token_file = "~/.config/trialkit/kap-prod.token"   # chmod 600
    timeout = 120
    chunk_size = 200
    requests_per_second = 5

The file says where the token is, never what it is: a `token` key is refused (the file is shared in the study
folder and often committed), and a token file must be readable by its owner only, as for `--token-file`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trialkit.errors import Location, UsageError
from trialkit.redcap.client import DEFAULT_TOKEN_ENV, RedcapClient, RetryPolicy, load_token

CONFIG_FILE = "trialkit.toml"
_KEYS = {"url", "token_env", "token_file", "timeout", "chunk_size", "requests_per_second", "attempts"}
_NUMBERS = {"timeout": float, "chunk_size": int, "requests_per_second": float, "attempts": int}


@dataclass(frozen=True)
class Connection:
    """Where a REDCap project is and how to reach it; holds no secret."""

    name: str
    url: str
    token_env: str | None = DEFAULT_TOKEN_ENV
    token_file: Path | None = None
    timeout: float = 60.0
    chunk_size: int = 500
    requests_per_second: float | None = None
    attempts: int = 5

    def client(self) -> RedcapClient:
        """A client for this connection; reads the token now (environment variable or 0600 file)."""
        token = load_token(self.token_env, self.token_file)
        return RedcapClient(self.url, token, timeout=self.timeout, retry=RetryPolicy(attempts=self.attempts),
                            chunk_size=self.chunk_size, requests_per_second=self.requests_per_second)


def load_connections(path: str | Path) -> dict[str, Connection]:
    """Every `[redcap.NAME]` table of a trialkit.toml. Raises UsageError (with the file) when it is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        # the parser's message names line and column but never quotes the text
        raise UsageError(f"not valid TOML: {exc}", location=Location(file=str(path))) from None
    tables = data.get("redcap", {})
    if not isinstance(tables, dict):
        raise UsageError("`redcap` must be a table of connections ([redcap.NAME])", location=Location(file=str(path)))
    return {name: _connection(name, table, path) for name, table in tables.items()}


def _connection(name: str, table: Any, path: Path) -> Connection:
    where = Location(file=str(path))

    def fail(message: str) -> UsageError:
        return UsageError(f"[redcap.{name}]: {message}", location=where)

    if not isinstance(table, dict):
        raise fail("must be a table")
    if "token" in table or "api_token" in table:
        raise fail("holds a token: remove it (and revoke it in REDCap, the file may have been shared); "
                   "name an environment variable (token_env) or a chmod 600 file (token_file) instead")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    url = table.get("url")
    if not isinstance(url, str) or not url:
        raise fail("needs url = \"https://.../api/\"")
    for key in ("token_env", "token_file"):
        if key in table and (not isinstance(table[key], str) or not table[key]):
            raise fail(f"{key} must be a non-empty string")
    if "token_env" in table and "token_file" in table:
        raise fail("give token_env or token_file, not both")
    numbers: dict[str, Any] = {}
    for key, kind in _NUMBERS.items():
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or (
                kind is int and not isinstance(value, int)):
            raise fail(f"{key} must be a positive {'whole ' if kind is int else ''}number")
        numbers[key] = kind(value)
    token_file = None
    if "token_file" in table:
        # relative to the toml file, so the study folder works from any working directory
        token_file = (path.parent / Path(table["token_file"]).expanduser()).resolve()
    return Connection(name=name, url=url, token_env=table.get("token_env", DEFAULT_TOKEN_ENV if token_file is None
                                                            else None),
                      token_file=token_file, **numbers)


def find_config(*folders: Path | None) -> Path | None:
    """The first trialkit.toml in the given folders (the study's, then the working directory)."""
    for folder in folders:
        if folder is not None and (Path(folder) / CONFIG_FILE).is_file():
            return Path(folder) / CONFIG_FILE
    return None


def resolve_connection(
    name: str | None,
    *,
    config: Path | None = None,
    url: str | None = None,
    token_env: str | None = None,
    token_file: Path | None = None,
    timeout: float | None = None,
) -> Connection:
    """The connection a command uses: a named one from `config`, or one made of `--url` and the token options.
    Options given on the command line win over the named connection's."""
    if name is None:
        if url is None:
            raise UsageError("give --connection NAME (from trialkit.toml) or --url")
        conn = Connection(name="(command line)", url=url)
    else:
        if config is None:
            raise UsageError(f"--connection {name}: no {CONFIG_FILE} in the study folder or working directory "
                             "(or give --config FILE)")
        known = load_connections(config)
        if name not in known:
            choices = ", ".join(sorted(known)) or "none defined"
            raise UsageError(f"no connection [redcap.{name}] in {config} ({choices})")
        conn = known[name]
        if url is not None:
            conn = _replace(conn, url=url)
    if token_file is not None:
        conn = _replace(conn, token_file=Path(token_file), token_env=None)
    elif token_env is not None:
        conn = _replace(conn, token_env=token_env, token_file=None)
    if timeout is not None:
        conn = _replace(conn, timeout=timeout)
    return conn


def _replace(conn: Connection, **changes: Any) -> Connection:
    from dataclasses import replace

    return replace(conn, **changes)
