-- Rule kv-stores (docs/design.md §4, firewall; LiT's migration 000003).

CREATE TABLE rules (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE UNIQUE INDEX rules_name_idx ON rules (name);

CREATE TABLE features (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE UNIQUE INDEX features_name_idx ON features (name);

CREATE TABLE kvstores (
    id INTEGER PRIMARY KEY,
    -- false: a temporary store, wiped at start-up.
    perm BOOLEAN NOT NULL,
    rule_id BIGINT NOT NULL REFERENCES rules(id),
    -- NULL: a global store.
    group_id BIGINT REFERENCES sessions(id) ON DELETE CASCADE,
    -- NULL: not scoped to a feature.
    feature_id BIGINT REFERENCES features(id),
    entry_key TEXT NOT NULL,
    value BLOB NOT NULL,
    CHECK (feature_id IS NULL OR group_id IS NOT NULL)
);

-- One unique index per namespace: a single UNIQUE over the nullable columns
-- would let duplicates in, because NULLs compare unequal.
CREATE UNIQUE INDEX kvstores_global_lookup_idx
    ON kvstores (entry_key, rule_id, perm)
    WHERE group_id IS NULL AND feature_id IS NULL;

CREATE UNIQUE INDEX kvstores_group_lookup_idx
    ON kvstores (entry_key, rule_id, perm, group_id)
    WHERE group_id IS NOT NULL AND feature_id IS NULL;

CREATE UNIQUE INDEX kvstores_feature_lookup_idx
    ON kvstores (entry_key, rule_id, perm, group_id, feature_id)
    WHERE feature_id IS NOT NULL;
