-- nodestore's own bookkeeping, the first step of every database.
--
-- nodestore_database holds one row: the database's identity, 16 random bytes
-- written when the schema is created. A key-value database's tombstone names
-- the identity of the SQL database its data went to, and the migration
-- record below names the identity of the key-value database it came from, so
-- "already migrated" and "migrated elsewhere" are decided by identity, never
-- by comparing connection strings (docs/design.md §3.2).
--
-- randomblob(16) is the one function the portable dialect rewrites for
-- PostgreSQL (see crates/sqldb/src/schema.rs).

CREATE TABLE nodestore_database (
    singleton SMALLINT NOT NULL PRIMARY KEY CHECK (singleton = 1),
    identity BLOB NOT NULL
);

INSERT INTO nodestore_database (singleton, identity) VALUES (1, randomblob(16));

-- One row per migration of a key-value database into this database, written
-- in the same transaction as the migrated data.
CREATE TABLE nodestore_kv_migrations (
    id INTEGER PRIMARY KEY,
    -- Where the key-value database was, for people; decisions use the identity.
    source_path TEXT NOT NULL,
    source_identity BLOB NOT NULL,
    -- The source's write sequence when it was read: a copy of the same
    -- database that was written to afterwards has a higher one.
    source_write_seq BIGINT NOT NULL,
    migrated_at TIMESTAMP NOT NULL,
    nodestore_version TEXT NOT NULL,
    -- True until the key-value database is tombstoned after the commit.
    tombstone_pending BOOLEAN NOT NULL,
    -- What was migrated, per store and table (JSON).
    report TEXT NOT NULL,
    -- With --accept-damaged: what the source was missing (JSON); else NULL.
    accepted_damage TEXT
);
