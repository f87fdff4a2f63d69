"""The workflow template editor: a graph canvas, a palette of step kinds, inspectors, undo/redo,
live validation, a version diff view and the Run… form.

The Qt-free parts (:mod:`.kinds`, :mod:`.ops`, :mod:`.layout`, :mod:`.validation`) work on
:class:`core.templates.WorkflowTemplate` only; the widgets adapt them to Qt.
"""
