"""Seed 002's ``celery_core`` package, for its Celery snippet: see :mod:`core.compat.celery_core.app`."""

from core.compat.celery_core.app import (
    AsyncResult,
    CeleryApp,
    NotRegistered,
    TaskTimeoutError,
    get_celery_app,
)

__all__ = ["AsyncResult", "CeleryApp", "NotRegistered", "TaskTimeoutError", "get_celery_app"]
