"""The `zapgate` command, run for real as a subprocess against a fresh database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

from tests.acceptance.support import (
    BAD_CLIENT_IDS,
    CLIENT_ID_RULE,
    CliRunner,
    Result,
    clean_environ,
    client_schemas,
    query,
    registered_clients,
    run_zapgate,
)
from zapgate import __version__

KEY = re.compile(r"zg_[A-Za-z0-9_-]{43}")


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> CliRunner:
    """Run `python -m zapgate ARGS` with a clean environment, the per-test database and an empty folder."""
    env = clean_environ(DATABASE_URL=database_url)

    async def run(*args: str) -> Result:
        return await run_zapgate(*args, env=env, cwd=tmp_path)

    return run


def issued_key(result: Result) -> str:
    """Return the one API key a create/rotate-key run printed (and check it printed nothing else of note)."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    keys = KEY.findall(result.stdout)
    assert len(keys) == 1, result.stdout
    return str(keys[0])


def assert_error_line(result: Result, *, returncode: int, mentions: str) -> None:
    """Check that the command failed with `returncode` and ended with one `zapgate: ...` line naming the problem."""
    assert result.returncode == returncode, (result.returncode, result.stderr)
    errors = [line for line in result.stderr_lines if line.startswith("zapgate: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr_lines[-1] == errors[0], result.stderr
    assert mentions in errors[0], result.stderr
    assert result.stdout == ""


async def stored_key_hashes(database_url: str, client: str) -> set[str]:
    rows = await query(database_url, "SELECT key_hash FROM zapgate.api_keys WHERE client_id = $1", client)
    return {row["key_hash"] for row in rows}


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def test_create_prints_the_key_once_and_list_never_shows_it(cli: CliRunner, database_url: str) -> None:
    empty = await cli("clients", "list")
    assert empty.returncode == 0, empty.stderr
    assert "no clients yet: create one with `zapgate clients create ID`" in empty.stdout

    created = await cli("clients", "create", "acme")

    key = issued_key(created)
    assert created.stdout.count(key) == 1
    assert "client acme created" in created.stdout
    assert await client_schemas(database_url) == ["client_acme"]
    assert await stored_key_hashes(database_url, "acme") == {sha256(key)}  # the printed key is the stored one
    listed, as_json = await asyncio.gather(cli("clients", "list"), cli("clients", "list", "--json"))
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^acme\s", listed.stdout, re.MULTILINE), listed.stdout
    assert key not in listed.stdout
    assert key[:10] in listed.stdout  # keys are told apart by their first characters only
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [(row["clientId"], row["keyPrefixes"]) for row in rows] == [("acme", [key[:10]])]
    assert key not in as_json.stdout


async def test_creating_an_existing_client_fails_and_keeps_its_key(cli: CliRunner, database_url: str) -> None:
    first_key = issued_key(await cli("clients", "create", "acme"))

    again = await cli("clients", "create", "acme")

    assert_error_line(again, returncode=1, mentions="client 'acme' already exists")
    assert await stored_key_hashes(database_url, "acme") == {sha256(first_key)}


async def test_rotate_key_replaces_every_key(cli: CliRunner, database_url: str) -> None:
    old = issued_key(await cli("clients", "create", "acme"))

    rotated = await cli("clients", "rotate-key", "acme")

    new = issued_key(rotated)
    assert new != old
    assert "old ones no longer work" in rotated.stdout
    assert await stored_key_hashes(database_url, "acme") == {sha256(new)}  # the old key is gone


async def test_delete_removes_the_client_and_its_schema(cli: CliRunner, database_url: str) -> None:
    for result in await asyncio.gather(cli("clients", "create", "acme"), cli("clients", "create", "globex")):
        issued_key(result)
    assert await client_schemas(database_url) == ["client_acme", "client_globex"]

    unconfirmed = await cli("clients", "delete", "acme")  # stdin is /dev/null: nobody confirms
    assert unconfirmed.returncode != 0
    assert await registered_clients(database_url) == ["acme", "globex"]

    deleted = await cli("clients", "delete", "acme", "--yes")

    assert deleted.returncode == 0, deleted.stderr
    assert "client acme deleted" in deleted.stdout
    assert await client_schemas(database_url) == ["client_globex"]  # the other client is untouched
    assert await registered_clients(database_url) == ["globex"]
    assert await stored_key_hashes(database_url, "acme") == set()


async def test_unknown_clients_fail_with_an_error_line(cli: CliRunner) -> None:
    rotated, deleted = await asyncio.gather(
        cli("clients", "rotate-key", "nosuch"), cli("clients", "delete", "nosuch", "--yes")
    )
    assert_error_line(rotated, returncode=1, mentions="client 'nosuch' not found")
    assert_error_line(deleted, returncode=1, mentions="client 'nosuch' not found")


async def test_a_refused_command_prints_only_its_error_line(cli: CliRunner) -> None:
    issued_key(await cli("clients", "create", "acme"))

    results = await asyncio.gather(
        cli("clients", "create", "acme"),
        cli("clients", "rotate-key", "nosuch"),
        cli("clients", "delete", "nosuch", "--yes"),
    )

    assert [result.returncode for result in results] == [1, 1, 1]
    assert [len(result.stderr_lines) for result in results] == [1, 1, 1], [result.stderr for result in results]


async def test_bad_client_ids_are_refused_before_touching_the_database(cli: CliRunner, database_url: str) -> None:
    assert (await cli("clients", "list")).returncode == 0  # the registry exists, so a stray row would show
    commands = {
        "create": lambda bad: ("clients", "create", bad),
        "rotate-key": lambda bad: ("clients", "rotate-key", bad),
        "delete": lambda bad: ("clients", "delete", bad, "--yes"),
    }
    runs = [(name, bad) for name in commands for bad in BAD_CLIENT_IDS]
    at_once = asyncio.Semaphore(8)

    async def run(name: str, bad: str) -> Result:
        async with at_once:
            return await cli(*commands[name](bad))

    results = await asyncio.gather(*(run(name, bad) for name, bad in runs))

    wrong = {}
    for (name, bad), result in zip(runs, results, strict=True):
        lines = result.stderr_lines
        if result.returncode != 2 or len(lines) != 1 or CLIENT_ID_RULE not in lines[0] or result.stdout:
            wrong[f"{name} {bad!r}"] = (result.returncode, result.stdout, result.stderr)
    assert wrong == {}
    assert await client_schemas(database_url) == []
    assert await registered_clients(database_url) == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ZAPGATE_PORT", "abc"), ("WHATSAPP_MAX_SESSIONS", "0"), ("DATABASE_URL", "mysql://x")],
)
@pytest.mark.parametrize("command", [("serve",), ("clients", "list")], ids=["serve", "clients-list"])
async def test_invalid_settings_stop_the_command_with_one_line(
    tmp_path: Path, command: tuple[str, ...], variable: str, value: str
) -> None:
    data_dir = tmp_path / "data"
    # a valid URL of a server that is not there: the command must stop before it would matter
    env = clean_environ(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", ZAPGATE_DATA_DIR=str(data_dir))
    env[variable] = value

    result = await run_zapgate(*command, env=env, cwd=tmp_path, within=30)

    assert_error_line(result, returncode=2, mentions=f"{variable}:")
    assert len(result.stderr_lines) == 1, result.stderr
    assert "invalid configuration" in result.stderr
    if variable == "DATABASE_URL":
        assert value not in result.stderr  # it may hold a password: never echoed
    assert not data_dir.exists()  # nothing was started


async def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = await run_zapgate("--help", env=clean_environ(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "clients"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), result.stdout

    clients_help = await run_zapgate("clients", "--help", env=clean_environ(), cwd=tmp_path)
    assert clients_help.returncode == 0, clients_help.stderr
    for command in ("create", "list", "rotate-key", "delete"):
        assert re.search(rf"^\s+{command}\s", clients_help.stdout, re.MULTILINE), clients_help.stdout


async def test_version_is_printed_by_the_installed_command(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "zapgate"
    assert script.exists(), "the `zapgate` console script is not installed"
    proc = await asyncio.create_subprocess_exec(
        script,
        "--version",
        env=clean_environ(),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == f"zapgate, version {__version__}"

    as_module = await run_zapgate("--version", env=clean_environ(), cwd=tmp_path)
    assert as_module.stdout.strip() == f"zapgate, version {__version__}"


async def test_sessions_commands(cli: CliRunner) -> None:
    issued_key(await cli("clients", "create", "acme"))
    created = await cli("sessions", "create", "acme", "alice", "--engine", "sandbox")
    assert created.returncode == 0, created.stderr
    assert "session alice created on sandbox" in created.stdout
    listed = await cli("sessions", "list", "acme")
    assert listed.returncode == 0 and re.search(r"^alice\s+created\s+sandbox", listed.stdout, re.MULTILINE)
    sent = await cli("sessions", "send", "acme", "alice", "+55 11 99999-0002", "olá")
    assert sent.returncode == 0 and re.fullmatch(r"3EB0[0-9A-F]{20} pending\n", sent.stdout)

    bad = await asyncio.gather(
        cli("sessions", "create", "acme", "a b"),
        cli("sessions", "create", "acme", "alice"),
        cli("sessions", "create", "Acme", "x"),
        cli("sessions", "send", "acme", "alice", "123", "x"),
        cli("sessions", "send", "acme", "alice", "5511999990002", "x" * 4097),
        cli("sessions", "show", "acme", "nobody"),
        cli("sessions", "scan", "acme", "alice", "not-a-number"),
    )
    assert_error_line(bad[0], returncode=2, mentions="invalid session id")
    assert_error_line(bad[1], returncode=1, mentions="already exists")
    assert_error_line(bad[2], returncode=2, mentions=CLIENT_ID_RULE)
    assert_error_line(bad[3], returncode=2, mentions="invalid phone number")
    assert_error_line(bad[4], returncode=2, mentions="at most 4096 characters")
    assert_error_line(bad[5], returncode=1, mentions="not found")
    assert_error_line(bad[6], returncode=2, mentions="invalid phone number")
    relisted = await cli("sessions", "list", "acme")
    assert relisted.stdout == listed.stdout  # nothing changed
