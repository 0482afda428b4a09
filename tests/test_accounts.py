"""Accounts without the web (review/accounts.py) and their command line (`run.py users`)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from db.store import Store
from review import accounts
from run import cli

PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "minewatch.db") as store:
        yield store


def test_create_and_authenticate(store) -> None:
    row = accounts.create_account(store, "ana", "lead", PASSWORD)
    assert row["role"] == "lead" and row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert accounts.authenticate(store, "ana", PASSWORD)["name"] == "ana"
    assert accounts.authenticate(store, "ana", "wrong password") is None
    assert accounts.authenticate(store, "nobody", PASSWORD) is None
    assert accounts.authenticate(store, "ana", "x" * 10_000) is None
    assert "password_hash" not in accounts.list_accounts(store)[0]


@pytest.mark.parametrize(("name", "role", "password", "message"), [
    ("", "reviewer", PASSWORD, "account name"),
    ("ana silva", "reviewer", PASSWORD, "account name"),
    ("ana:1", "reviewer", PASSWORD, "account name"),   # ":" would blur request-id keys
    ("x" * 41, "reviewer", PASSWORD, "account name"),
    ("Local", "reviewer", PASSWORD, "reserved"),
    ("ana", "boss", PASSWORD, "unknown role"),
    ("ana", "reviewer", "short", "at least 10"),
    ("ana", "reviewer", "p" * 201, "at most 200"),
])
def test_bad_accounts_are_refused(store, name, role, password, message) -> None:
    with pytest.raises(accounts.AccountError, match=message):
        accounts.create_account(store, name, role, password)
    assert store.accounts.accounts() == []


def test_names_are_never_reused(store) -> None:
    accounts.create_account(store, "ana", "reviewer", PASSWORD)
    accounts.disable_account(store, "ana")
    with pytest.raises(accounts.AccountError, match="already exists"):
        accounts.create_account(store, "ana", "admin", PASSWORD)


def test_disable_and_reset_end_sessions(store) -> None:
    first = accounts.create_account(store, "ana", "reviewer", PASSWORD)
    store.leases.lease_cells([(7, 2021)], "ana", 60)
    disabled = accounts.disable_account(store, "ana")
    assert store.leases.lease(7, 2021) is None  # its leases are released
    assert disabled["disabled"] == 1 and disabled["session_version"] > first["session_version"]
    assert accounts.authenticate(store, "ana", PASSWORD) is None
    accounts.disable_account(store, "ana", disabled=False)
    reset = accounts.reset_password(store, "ana", "another long password")
    assert accounts.authenticate(store, "ana", PASSWORD) is None
    assert accounts.authenticate(store, "ana", "another long password")["session_version"] == (
        reset["session_version"])
    with pytest.raises(accounts.AccountError, match="no account"):
        accounts.reset_password(store, "zed", PASSWORD)


def test_old_hash_parameters_are_upgraded_at_login(store, monkeypatch) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    store.accounts.add_account("ana", "reviewer", weak.hash(PASSWORD))
    assert accounts.authenticate(store, "ana", PASSWORD) is not None
    upgraded = store.accounts.account("ana")["password_hash"]
    assert not accounts._hasher.check_needs_rehash(upgraded)


def test_roles_are_ordered() -> None:
    assert accounts.role_allows("admin", "lead") and accounts.role_allows("lead", "reviewer")
    assert not accounts.role_allows("reviewer", "lead")
    with pytest.raises(accounts.AccountError):
        accounts.role_allows("reviewer", "owner")


# run.py users -------------------------------------------------------------------------------------
def users(tmp_path, *args, stdin: str | None = None):
    return CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "users", *args], input=stdin)


def test_users_commands(tmp_path) -> None:
    made = users(tmp_path, "add", "ana", "--role", "lead", "--password-stdin",
                 stdin=PASSWORD + "\n")
    assert made.exit_code == 0 and "Account ana (lead) created." in made.output
    prompted = users(tmp_path, "add", "ben", "--role", "reviewer",
                     stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    listed = users(tmp_path, "list")
    assert listed.exit_code == 0 and "ana" in listed.output and "lead" in listed.output
    assert "$argon2" not in listed.output
    assert users(tmp_path, "disable", "ben").exit_code == 0
    assert "disabled" in users(tmp_path, "list").output
    reset = users(tmp_path, "reset-password", "ana", "--password-stdin",
                  stdin="a brand new password\n")
    assert reset.exit_code == 0
    with Store(tmp_path / "minewatch.db") as store:
        assert accounts.authenticate(store, "ana", "a brand new password") is not None
        assert accounts.authenticate(store, "ben", PASSWORD) is None


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("add", "ana silva", "--role", "reviewer", "--password-stdin"), PASSWORD, "account name"),
    (("add", "ana", "--role", "reviewer", "--password-stdin"), "short", "at least 10"),
    (("add", "ana", "--role", "owner", "--password-stdin"), PASSWORD, "Invalid value"),
    (("disable", "zed"), None, "no account named 'zed'"),
    (("reset-password", "zed", "--password-stdin"), PASSWORD, "no account named 'zed'"),
])
def test_users_mistakes_are_one_line(tmp_path, args, stdin, message) -> None:
    result = users(tmp_path, *args, stdin=stdin)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_users_help() -> None:
    for command in ("add", "list", "disable", "reset-password"):
        result = CliRunner().invoke(cli, ["users", command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_names_are_unique_whatever_their_case(store) -> None:
    accounts.create_account(store, "Ana", "reviewer", PASSWORD)
    with pytest.raises(accounts.AccountError, match="'Ana' already exists"):
        accounts.create_account(store, "ana", "admin", PASSWORD)
    assert accounts.authenticate(store, "ANA", PASSWORD)["name"] == "Ana"
    assert store.accounts.account("ana") is None  # sessions and leases keep the exact name
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError):  # the index holds even below the Store
        store.db.execute("INSERT INTO accounts (name, role, password_hash, created_at,"
                         " updated_at) VALUES ('aNa', 'admin', 'x', '', '')")


def test_migration_renames_and_disables_later_case_twins(tmp_path) -> None:
    """A database made before names ignored case, holding 'ana' and then 'Ana': the older
    keeps its name; the later one is renamed '<name>-renamed-<id>', disabled, its sessions
    ended and its leases released; its decisions keep the name they were made under."""
    from sqlite_utils import Database

    from db.migrations import migrations

    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="0014_account_names_ignore_case")
    for name in ("ana", "Ana", "ben"):
        old.execute("INSERT INTO accounts (name, role, password_hash, created_at, updated_at)"
                    " VALUES (?, 'reviewer', 'x', '', '')", [name])
    old.execute("INSERT INTO leases (cell_id, year, reviewer, expires_at) VALUES (1, 2021,"
                " 'Ana', 9e99)")
    old.conn.commit()
    old.close()
    with Store(path) as store:
        rows = {r["name"]: r for r in store.accounts.accounts()}
        assert set(rows) == {"ana", "Ana-renamed-2", "ben"}
        assert rows["ana"]["disabled"] == 0 and rows["ben"]["disabled"] == 0
        renamed = rows["Ana-renamed-2"]
        assert renamed["disabled"] == 1 and renamed["session_version"] == 1
        assert store.leases.lease(1, 2021) is None
