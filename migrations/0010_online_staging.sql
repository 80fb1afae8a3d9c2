-- An online migration commits its bulk copy before the node's last writes
-- are replayed, so that the pause of writers holds only a short transaction
-- (docs/design.md §7.3). Until that second transaction commits, the copy is
-- staged: the key-value database is still the truth, no open serves the
-- copy, and the next migration of the same key-value database discards it
-- and starts again. This table holds at most one row, the staged copy's
-- source; the migration record is written, and this row deleted, in the
-- transaction that ends the migration.

CREATE TABLE nodestore_online_staging (
    singleton SMALLINT NOT NULL PRIMARY KEY CHECK (singleton = 1),
    -- Where the key-value database was, for people; decisions use the identity.
    source_path TEXT NOT NULL,
    source_identity BLOB NOT NULL,
    staged_at TIMESTAMP NOT NULL
);
