"""Accounts and roles, without any web framework: create, list, disable, reset, log in.

Passwords are hashed with argon2id (``argon2-cffi``'s ``PasswordHasher`` and its defaults); only
the hash is stored. An account's name is its identity everywhere (the reviewer columns of label
events, leases and current labels), so names are unique, never renamed and never reused. Roles
are ordered: a ``lead`` may do all a ``reviewer`` may, an ``admin`` all a ``lead`` may. Names are
unique without regard to case ("Ana" and "ana" cannot both exist) and a login may type any case.
``run.py users ...`` and the web app's accounts page call these functions.
"""

from __future__ import annotations

import re
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from db.store import Store, StoreError

#: Roles from least to most allowed.
ROLES: tuple[str, ...] = ("reviewer", "lead", "admin")
#: The identity requests act as on a loopback-only installation without any account (open mode).
LOCAL_NAME = "local"
#: The reviewer of labels brought in a file (``run.py labels import``); no account may take it, so
#: nobody can log in as it.
IMPORT_NAME = "import"
#: Shortest accepted password.
MIN_PASSWORD = 10
#: Longest accepted password (argon2 hashes anything, but a 1 MB "password" is an attack).
MAX_PASSWORD = 200
#: Account names: a letter or digit, then letters, digits, ".", "_" or "-"; at most 40 characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")

_hasher = PasswordHasher()
#: Verified against when the account is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("minewatch-no-such-account")


class AccountError(ValueError):
    """A refused account operation; the message is written for the person at the keyboard."""


def role_rank(role: str) -> int:
    """The position of ``role`` in :data:`ROLES` (AccountError when unknown)."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise AccountError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}") from None


def role_allows(role: str, needed: str) -> bool:
    """Whether an account of ``role`` may do what ``needed`` requires."""
    return role_rank(role) >= role_rank(needed)


def check_name(name: str) -> str:
    """The name, if it is a valid new account name (AccountError otherwise)."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise AccountError("an account name is 1-40 letters, digits, '.', '_' or '-', starting "
                           f"with a letter or digit; got {name[:50]!r}")
    if name.lower() == LOCAL_NAME:
        raise AccountError(f"{LOCAL_NAME!r} is reserved for open mode on this machine")
    if name.lower() == IMPORT_NAME:
        raise AccountError(f"{IMPORT_NAME!r} is reserved for imported labels")
    return name


def check_password(password: str) -> str:
    """The password, if long enough and not absurdly long (AccountError otherwise)."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password has at most {MAX_PASSWORD} characters")
    return password


def create_account(store: Store, name: str, role: str, password: str) -> dict[str, Any]:
    """Create an account (name and password checked, password hashed); returns its row."""
    check_name(name)
    role_rank(role)
    check_password(password)
    try:
        return store.accounts.add_account(name, role, _hasher.hash(password))
    except StoreError as error:
        raise AccountError(str(error)) from None


#: How to make the first admin, said by ``run.py serve``, ``run.py users add`` and the login page
#: while no active admin exists (nobody can open the accounts page then).
FIRST_ADMIN_HINT = ("No admin account yet: create the first one with "
                    "`python run.py users add NAME --role admin`.")


def has_admin(store: Store) -> bool:
    """Whether some enabled account has the admin role."""
    return any(row["role"] == "admin" and not row["disabled"] for row in store.accounts.accounts())


def list_accounts(store: Store) -> list[dict[str, Any]]:
    """Every account without its password hash, by name."""
    return [{k: v for k, v in row.items() if k != "password_hash"} for row in store.accounts.accounts()]


def disable_account(store: Store, name: str, *, disabled: bool = True) -> dict[str, Any]:
    """Disable an account (its sessions end and its leases are released), or enable it again."""
    try:
        return store.accounts.update_account(name, disabled=disabled)
    except StoreError as error:
        raise AccountError(str(error)) from None


def reset_password(store: Store, name: str, password: str) -> dict[str, Any]:
    """Set a new password; the account's open sessions end."""
    check_password(password)
    try:
        return store.accounts.update_account(name, password_hash=_hasher.hash(password))
    except StoreError as error:
        raise AccountError(str(error)) from None


def log_out(store: Store, name: str) -> None:
    """End every open session of the account (a saved cookie is refused afterwards) and release
    its leases, in one transaction."""
    with store.atomic():
        store.leases.release_leases(name)
        store.accounts.update_account(name)


def authenticate(store: Store, name: str, password: str) -> dict[str, Any] | None:
    """The account if ``name`` (in any case) and ``password`` match an enabled account, else None.

    An unknown name costs one hash verification too. A hash made with older argon2 parameters
    is replaced by a fresh one on a successful login.
    """
    account = store.accounts.account_for_login(name) if len(name) <= 100 else None
    if len(password) > MAX_PASSWORD:
        return None
    try:
        _hasher.verify(account["password_hash"] if account else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if account is None or account["disabled"]:
        return None
    if _hasher.check_needs_rehash(account["password_hash"]):
        store.accounts.update_account(account["name"], password_hash=_hasher.hash(password),
                                      end_sessions=False)
    return account
