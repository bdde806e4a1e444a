"""Named connections in trialkit.toml: parsing, refusal of tokens in the file, token files' permissions,
command-line overrides, request pacing, and `--connection` on the commands (sandbox over HTTP)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from definitions_data import classic_study, new_project, run_cli

from trialkit.errors import UsageError
from trialkit.redcap.client import RedcapClient, Token
from trialkit.redcap.connections import Connection, find_config, load_connections, resolve_connection

SECRET = "0123456789ABCDEF0123456789ABCDEF"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trialkit.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_named_connections_are_read_with_their_settings(tmp_path):
    path = write(tmp_path, """
[redcap.dev]
url = "http://127.0.0.1:8765/api/"
token_env = "KAP_DEV_TOKEN"

[redcap.prod]
url = "https://redcap.example.org/api/"
token_file = "secrets/prod.token"
timeout = 120
chunk_size = 200
requests_per_second = 2.5
attempts = 3
""")
    found = load_connections(path)
    assert found["dev"] == Connection(name="dev", url="http://127.0.0.1:8765/api/", token_env="KAP_DEV_TOKEN")
    prod = found["prod"]
    assert prod.token_file == (tmp_path / "secrets" / "prod.token").resolve()  # relative to the toml file
    assert prod.token_env is None
    assert (prod.timeout, prod.chunk_size, prod.requests_per_second, prod.attempts) == (120.0, 200, 2.5, 3)


@pytest.mark.parametrize(("body", "message"), [
    (f'url = "http://x/api/"\ntoken = "{SECRET}"', "holds a token"),
    (f'url = "http://x/api/"\napi_token = "{SECRET}"', "holds a token"),
    ('url = "http://x/api/"\ntoken_env = "A"\ntoken_file = "t"', "not both"),
    ('url = "http://x/api/"\nchunksize = 5', "unknown key(s) chunksize"),
    ('url = "http://x/api/"\ntimeout = -1', "timeout must be a positive number"),
    ('url = "http://x/api/"\nchunk_size = 2.5', "chunk_size must be a positive whole number"),
    ('token_env = "A"', "needs url"),
])
def test_a_wrong_connection_is_refused_with_the_file_and_never_the_token(tmp_path, body, message):
    path = write(tmp_path, f"[redcap.dev]\n{body}\n")
    with pytest.raises(UsageError) as info:
        load_connections(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert SECRET not in str(info.value)


def test_not_toml_is_a_located_usage_error(tmp_path):
    path = write(tmp_path, f'[redcap.dev]\nurl = "http://x/api/\ntoken = "{SECRET}"\n')
    with pytest.raises(UsageError) as info:
        load_connections(path)
    assert "not valid TOML" in str(info.value) and "line" in str(info.value)
    assert SECRET not in str(info.value)


def test_token_file_must_be_private(tmp_path, monkeypatch):
    token_file = tmp_path / "prod.token"
    token_file.write_text(SECRET + "\n")
    path = write(tmp_path, '[redcap.prod]\nurl = "http://127.0.0.1:9/api/"\ntoken_file = "prod.token"\n')
    conn = load_connections(path)["prod"]
    os.chmod(token_file, 0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        conn.client()
    os.chmod(token_file, 0o600)
    client = conn.client()
    assert SECRET not in repr(client)


def test_resolution_and_command_line_overrides(tmp_path):
    path = write(tmp_path, '[redcap.dev]\nurl = "http://127.0.0.1:8765/api/"\ntoken_env = "DEV_TOKEN"\n')
    assert find_config(None, tmp_path / "nowhere", tmp_path) == path
    conn = resolve_connection("dev", config=path, token_file=Path("t.token"), timeout=5)
    assert (conn.url, conn.token_env, conn.token_file, conn.timeout) == ("http://127.0.0.1:8765/api/", None,
                                                                         Path("t.token"), 5)
    with pytest.raises(UsageError, match=r"no connection \[redcap.prod\] in .* \(dev\)"):
        resolve_connection("prod", config=path)
    with pytest.raises(UsageError, match=r"no trialkit\.toml"):
        resolve_connection("dev", config=None)
    with pytest.raises(UsageError, match="--connection NAME"):
        resolve_connection(None)
    assert resolve_connection(None, url="http://h/api/").url == "http://h/api/"


def test_requests_are_paced_to_the_connection_rate(sandbox):
    token, _ = new_project(sandbox, classic_study())
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    try:
        client = RedcapClient(sandbox.url, Token(token), requests_per_second=20, sleep=sleep)
        start = time.monotonic()
        for _ in range(5):
            client.project_info()
        assert time.monotonic() - start >= 4 / 20 * 0.9
        assert len(waits) >= 3
        unpaced = RedcapClient(sandbox.url, Token(token), sleep=sleep)
        waits.clear()
        for _ in range(5):
            unpaced.project_info()
        assert waits == []
    finally:
        sandbox.drop_project(token)


def test_commands_take_a_named_connection(sandbox, tmp_path, capsys, monkeypatch):
    from trialkit.definitions.yamlwrite import write_study

    token, _ = new_project(sandbox, classic_study())
    try:
        write_study(classic_study(), tmp_path)
        write(tmp_path, f'[redcap.dev]\nurl = "{sandbox.url}"\ntoken_env = "KAP_DEV_TOKEN"\n')
        monkeypatch.setenv("KAP_DEV_TOKEN", token)
        monkeypatch.delenv("REDCAP_API_TOKEN", raising=False)
        code, out, err = run_cli(["redcap", "diff", "--connection", "dev", "--study", str(tmp_path)], capsys)
        assert (code, out) == (0, "no differences: the project matches the study\n"), err
        assert token not in out + err
        monkeypatch.chdir(tmp_path)  # the working directory's trialkit.toml, for commands without --study
        code, out, err = run_cli(["redcap", "pull-definitions", "--connection", "dev", "--out", "pulled"], capsys)
        assert (code, out) == (0, "wrote 4 file(s) under pulled\n"), err
        code, out, err = run_cli(["redcap", "diff", "--connection", "dev", "--study", "pulled"], capsys)
        assert (code, out) == (0, "no differences: the project matches the study\n"), err
        monkeypatch.delenv("KAP_DEV_TOKEN")
        code, _, err = run_cli(["redcap", "diff", "--connection", "dev", "--study", str(tmp_path)], capsys)
        assert code == 2 and "KAP_DEV_TOKEN" in err
        code, _, err = run_cli(["redcap", "nightly", "--connection", "dev", "--rules", "missing.yaml"], capsys)
        assert code == 2 and "KAP_DEV_TOKEN" in err and "Traceback" not in err
    finally:
        sandbox.drop_project(token)
