-- v2: workflow templates (versioned, immutable once published), runs and step executions
CREATE TABLE templates (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    published_at REAL NOT NULL,
    published_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    template_name TEXT NOT NULL,
    template_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 50,
    input_data TEXT NOT NULL,
    context TEXT NOT NULL,
    recovery_attempts INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    deadline REAL
);
CREATE INDEX runs_by_status ON runs (status, created);
CREATE INDEX runs_by_template ON runs (template_name, template_version, created);
CREATE INDEX runs_by_priority ON runs (priority, created);
CREATE INDEX runs_by_created ON runs (created);
CREATE TABLE step_runs (
    run_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    outputs TEXT,
    error TEXT,
    error_code TEXT,
    started REAL,
    ended REAL,
    next_attempt_at REAL,
    instrument TEXT,
    PRIMARY KEY (run_id, step_id)
);
CREATE INDEX step_runs_by_order ON step_runs (order_id);
CREATE INDEX step_runs_by_status ON step_runs (status);
