"""The operating-system user under its former import path; new code imports it from :mod:`core.users`."""

from core.users import os_user

__all__ = ["os_user"]
