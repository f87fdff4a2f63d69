"""labconsole core: everything that is not Qt.

Models, persistence, the event bus and (in later modules) the engine, queue, dispatcher,
drivers and the Data Services client/server. Nothing in this package imports PySide6, qasync,
pyqtgraph or shiboken6; an import-linter contract in ``pyproject.toml`` enforces it and the test
suite runs that contract.
"""
