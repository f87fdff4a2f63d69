-- v1: orders, transition log, audit log, id sequences
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        parent_id TEXT,
        source_id TEXT,
        run_after_id TEXT,
        template_name TEXT,
        template_version TEXT,
        status INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        numeric_priority INTEGER NOT NULL DEFAULT 50,
        assigned_to TEXT,
        created REAL,
        scheduled REAL,
        started REAL,
        ended REAL,
        updated REAL NOT NULL,
        status_details TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX orders_by_status ON orders (status, priority, numeric_priority DESC, scheduled, seq);
    CREATE INDEX orders_by_parent ON orders (parent_id);
    CREATE INDEX orders_by_template ON orders (template_name, created);
    CREATE INDEX orders_by_created ON orders (created);
    CREATE INDEX orders_by_assigned ON orders (assigned_to, status);
    CREATE TABLE transitions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id TEXT NOT NULL,
        from_status INTEGER,
        to_status INTEGER NOT NULL,
        at REAL NOT NULL,
        who TEXT NOT NULL,
        why TEXT
    );
    CREATE INDEX transitions_by_order ON transitions (order_id, seq);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        reason TEXT,
        details TEXT
    );
    CREATE INDEX audit_by_target ON audit (target, seq);
