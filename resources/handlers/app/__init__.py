"""Handlers named as in the workflow-engine documentation (``app.services.handlers.*``)."""
