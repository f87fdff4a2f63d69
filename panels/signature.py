"""The electronic signature dialog: re-enter the password, choose the meaning, sign one action.

Used by the operator actions that ``[SIGNATURES] require`` lists while named users are on
(:func:`needs_signature`). :func:`request_signature` opens the dialog (``open()``, awaited, never
``exec()``), checks the password off the event loop (:func:`core.users.asign`) and gives back the
:class:`~core.users.Signature` the runtime records with the action — or None if the operator
backed out. A wrong password keeps the dialog's place: it opens again saying so, three times.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.users import MEANINGS, AuthenticationError, Signature, asign, has_users
from panels.widgets import error_label, password_edit

ATTEMPTS = 3


def needs_signature(runtime: RuntimeApi, action: str) -> bool:
    """True when ``action`` must be signed (configured, and named users are on)."""
    return runtime.signatures.needs(action) and has_users(runtime.store)


class SignatureDialog(QDialog):
    """User name, password and meaning for one signed action."""

    def __init__(self, action: str, target: str | None, *, user: str, error: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Sign: {action}")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(420)
        self.user = user
        self.password = ""
        self.meaning = MEANINGS[0]
        what = f"<b>{action[:1].upper()}{action[1:]}</b>" + (f" of <b>{target}</b>" if target else "")
        message = QLabel(f"{what} needs your electronic signature. Your name, the meaning and the "
                         "time are recorded with the action in the audit trail.", self)
        message.setWordWrap(True)
        self.user_edit = QLineEdit(user, self)
        self.user_edit.setObjectName("user")
        self.password_edit = password_edit(self)
        self.meaning_box = QComboBox(self)
        self.meaning_box.setObjectName("meaning")
        self.meaning_box.addItems(MEANINGS)
        self.meaning_box.setCurrentText("approved")
        self.error = error_label(error, self)
        form = QFormLayout()
        form.addRow("User:", self.user_edit)
        form.addRow("Password:", self.password_edit)
        form.addRow("Meaning:", self.meaning_box)
        self.buttons = QDialogButtonBox(self)
        self.ok_button = self.buttons.addButton("Sign", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton("Back", QDialogButtonBox.ButtonRole.RejectRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.password_edit.textChanged.connect(self._validate)
        self.user_edit.textChanged.connect(self._validate)
        layout = QVBoxLayout(self)
        layout.addWidget(message)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self._validate()
        (self.password_edit if user else self.user_edit).setFocus()

    def _validate(self) -> None:
        self.ok_button.setEnabled(bool(self.user_edit.text().strip() and self.password_edit.text()))

    def accept(self) -> None:
        if not self.ok_button.isEnabled():
            return
        self.user = self.user_edit.text().strip()
        self.password = self.password_edit.text()
        self.meaning = self.meaning_box.currentText()
        self.password_edit.clear()  # the password lives only as long as the check
        super().accept()


async def request_signature(ask: Callable[[QDialog], Awaitable[bool]], runtime: RuntimeApi, action: str,
                            target: str | None, *, user: str, parent: QWidget | None = None) -> Signature | None:
    """Ask for a signature of ``action`` on ``target``; None if the operator backs out."""
    error = ""
    for _ in range(ATTEMPTS):
        dialog = SignatureDialog(action, target, user=user, error=error, parent=parent)
        if not await ask(dialog):
            return None
        user, password, meaning = dialog.user, dialog.password, dialog.meaning
        try:
            return await asign(runtime.store, user, password, meaning, action, target)
        except AuthenticationError:
            error = "Wrong user name or password (or the user is disabled). Try again."
    raise AuthenticationError(f"{action}: the signature was refused {ATTEMPTS} times; nothing was done")
