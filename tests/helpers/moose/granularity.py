"""Seed 004, Best Practices 2 (Task Granularity), as written; the result models are the ones the
seed implies (``ValidationResult(valid, error)``, ``EmailResult(sent, message_id)``) and
``UserData`` is Best Practices 1's."""

from typing import Optional

from helpers.moose.type_safety import UserData
from pydantic import BaseModel


class ValidationResult(BaseModel):
    valid: bool
    error: Optional[str]  # noqa: UP045 - as the seed's calls imply


class EmailResult(BaseModel):
    sent: bool
    message_id: str


# ---- the seed
# Keep tasks focused and single-purpose
async def validate_email(user: UserData) -> ValidationResult:
    """Single purpose: validate email format"""
    if "@" not in user.email:
        return ValidationResult(valid=False, error="Invalid email format")
    return ValidationResult(valid=True, error=None)

async def send_welcome_email(user: UserData) -> EmailResult:
    """Single purpose: send welcome email"""
    # Email sending logic
    return EmailResult(sent=True, message_id="12345")
