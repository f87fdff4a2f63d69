-- v7: the operator inbox (everything that waits for a person) and the error playbook
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    title TEXT NOT NULL,
    run_id TEXT,
    step_id TEXT,
    order_id TEXT,
    instrument TEXT,
    answerers TEXT,
    form TEXT NOT NULL,
    suggestion TEXT,
    context TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'open',
    answer TEXT,
    answered_by TEXT,
    answered_at REAL,
    escalated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX inbox_open ON inbox (state, priority DESC, created);
CREATE INDEX inbox_by_order ON inbox (order_id, state);
CREATE INDEX inbox_by_run ON inbox (run_id, state);
CREATE TABLE playbook_rules (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    error_code TEXT NOT NULL,
    capability TEXT,
    instrument TEXT,
    template TEXT,
    response TEXT NOT NULL,
    max_attempts INTEGER,
    backoff REAL,
    outputs TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE playbook_choices (
    signature TEXT NOT NULL,
    choice TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (signature, choice)
);
