"""Seed 004, Best Practices 1 (Type Safety), as written; ``process_user_data`` is the function the
seed names and leaves to the reader: it processes one user record."""

from datetime import datetime

from pydantic import BaseModel

from core.compat.seed004 import Task, TaskConfig


# ---- the function the seed implies
async def process_user_data(user: "UserData") -> "ProcessingResult":
    errors = [] if "@" in user.email else [f"user {user.user_id}: invalid email {user.email!r}"]
    return ProcessingResult(success=not errors, records_processed=0 if errors else 1, errors=errors)


# ---- the seed
# Always use typed models for inputs and outputs
class UserData(BaseModel):
    user_id: str
    email: str
    created_at: datetime

class ProcessingResult(BaseModel):
    success: bool
    records_processed: int
    errors: list[str]

# Typed task ensures compile-time safety
typed_task = Task[UserData, ProcessingResult](
    name="processUser",
    config=TaskConfig(run=process_user_data)
)
