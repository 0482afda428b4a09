"""Accounts: names, roles, password hashes and the session version that ends sessions."""

from __future__ import annotations

from typing import Any

from db.base import Part, StoreError, utc_now


class Accounts(Part):
    """The accounts table."""

    def add_account(self, name: str, role: str, password_hash: str) -> dict[str, Any]:
        """Create an account; StoreError when the name is taken in any case (names are never
        reused)."""
        now = utc_now()
        with self.atomic():
            taken = self.account_for_login(name)
            if taken is not None:
                raise StoreError(f"an account named {taken['name']!r} already exists (names "
                                 "ignore case)")
            self.db.execute(
                "INSERT INTO accounts (name, role, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)", [name, role, password_hash, now, now])
            return self.account(name)

    def account(self, name: str) -> dict[str, Any] | None:
        """The account of exactly this name (sessions and leases use the exact name), or None."""
        return self._row("SELECT * FROM accounts WHERE name = ?", [name])

    def account_for_login(self, name: str) -> dict[str, Any] | None:
        """The account whose name equals ``name`` without regard to (ASCII) case."""
        return self._row("SELECT * FROM accounts WHERE name = ? COLLATE NOCASE", [name])

    def accounts(self) -> list[dict[str, Any]]:
        """Every account, by name."""
        return self._rows("SELECT * FROM accounts ORDER BY name")

    def has_accounts(self) -> bool:
        """Whether any account exists (none: the first one is set up)."""
        return bool(self._scalar("SELECT EXISTS (SELECT 1 FROM accounts)"))

    def update_account(self, name: str, *, password_hash: str | None = None,
                       disabled: bool | None = None, end_sessions: bool = True) -> dict[str, Any]:
        """Change an account's password hash and/or disabled flag (StoreError if unknown).

        With ``end_sessions`` its ``session_version`` grows, so its open sessions end.
        """
        with self.atomic():
            if self.account(name) is None:
                raise StoreError(f"no account named {name!r}")
            if password_hash is not None:
                self.db.execute("UPDATE accounts SET password_hash = ? WHERE name = ?",
                                [password_hash, name])
            if disabled is not None:
                self.db.execute("UPDATE accounts SET disabled = ? WHERE name = ?",
                                [int(disabled), name])
            bump = 1 if end_sessions else 0
            self.db.execute("UPDATE accounts SET updated_at = ?,"
                            " session_version = session_version + ? WHERE name = ?",
                            [utc_now(), bump, name])
            if disabled:
                self.db.execute("DELETE FROM leases WHERE reviewer = ?", [name])
            return self.account(name)
