"""Account rules: who may sign up, and checking a password without leaking which emails exist."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email

from chatapp.accounts.limits import HashGate
from chatapp.core.tables import UserAccount
from chatapp.core.validation import control_character_message, has_control_characters

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
MAX_DISPLAY_NAME_LENGTH = 80
SIGNUP_REFUSED = (
    "We could not create an account with these details. If you have signed up before, log in instead; "
    "otherwise check the email address."
)

_hasher = PasswordHasher()
# Every hash and verification goes through here; create_app sizes it from the settings.
hash_gate = HashGate(concurrency=2, wait=5.0)
# Verifying against a throwaway hash for unknown emails makes a miss cost as much time as a hit.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    display_name: str


# What a User is made of, as the query builder names the columns.
USER_COLUMNS = (UserAccount.id, UserAccount.email, UserAccount.display_name)


class AccountError(ValueError):
    """Form errors by field name; the messages are shown next to the fields."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def normalize_email(raw: str) -> str:
    """Validate syntax only (no DNS lookups) and return the lower-cased address."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise AccountError({"email": f"Enter a valid email address ({exc})."}) from None
    return result.normalized.lower()


def validate_signup(email: str, display_name: str, password: str) -> tuple[str, str]:
    errors: dict[str, str] = {}
    try:
        email = normalize_email(email)
    except AccountError as exc:
        errors.update(exc.errors)
    raw_name, display_name = display_name, " ".join(display_name.split())
    if has_control_characters(raw_name):
        errors["display_name"] = control_character_message("Your name")
    elif not display_name:
        errors["display_name"] = "Enter the name the agent should call you."
    elif len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        errors["display_name"] = f"Use at most {MAX_DISPLAY_NAME_LENGTH} characters."
    if len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = f"Use at least {MIN_PASSWORD_LENGTH} characters."
    elif len(password) > MAX_PASSWORD_LENGTH:
        errors["password"] = f"Use at most {MAX_PASSWORD_LENGTH} characters."
    if errors:
        raise AccountError(errors)
    return email, display_name


async def create_user(email: str, display_name: str, password: str) -> User:
    """Create an account, or raise AccountError (bad input, or the email is taken)."""
    email, display_name = validate_signup(email, display_name, password)
    # Hashing takes ~0.25 s of CPU by design: off the event loop, so live streams do not stall meanwhile.
    # It happens before the insert either way, so a taken email answers as slowly as a new one.
    password_hash = await hash_gate.run(_hasher.hash, password)
    try:
        rows = await UserAccount.insert(
            UserAccount(email=email, display_name=display_name, password_hash=password_hash)
        ).returning(*USER_COLUMNS)
    except asyncpg.UniqueViolationError:
        # The refusal itself tells that the email has an account (422 here, 303 for a new one): without outgoing
        # email that cannot be hidden from honest users. The message stays neutral and the sign-up form's rate
        # limit keeps it from testing addresses in bulk (README, security).
        raise AccountError({"email": SIGNUP_REFUSED}) from None
    return User(**rows[0])


async def hash_password(password: str) -> str:
    """An argon2 hash with the app's parameters, computed through the hash gate (off the event loop)."""
    return await hash_gate.run(_hasher.hash, password)


def login_key(raw_email: str) -> str:
    """The account a login attempt is for: the normalised email, or the raw text when it is not an email."""
    try:
        return normalize_email(raw_email)
    except AccountError:
        return raw_email.strip().lower()


async def authenticate(email: str, password: str) -> User | None:
    """The user whose email and password match, else None (same work either way)."""
    try:
        email = normalize_email(email)
    except AccountError:
        email = ""
    row = await UserAccount.select(*USER_COLUMNS, UserAccount.password_hash).where(UserAccount.email == email).first()
    stored = row["password_hash"] if row else _DUMMY_HASH
    try:
        await hash_gate.run(_hasher.verify, stored, password[:MAX_PASSWORD_LENGTH])
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(stored):
        rehashed = await hash_gate.run(_hasher.hash, password)
        await UserAccount.update({UserAccount.password_hash: rehashed}).where(UserAccount.id == row["id"])
    return User(id=row["id"], email=row["email"], display_name=row["display_name"])


async def get_user(user_id: uuid.UUID) -> User | None:
    row = await UserAccount.select(*USER_COLUMNS).where(UserAccount.id == user_id).first()
    return User(**row) if row else None
