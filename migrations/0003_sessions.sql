-- Sessions: remote-access sessions with their macaroon recipe, feature
-- configs and privacy flags (docs/design.md §4, sessions; LiT's tables).

CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    -- The legacy 4-byte session id.
    alias BLOB NOT NULL UNIQUE,
    label TEXT NOT NULL,
    state SMALLINT NOT NULL,
    type SMALLINT NOT NULL,
    expiry TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    server_address TEXT NOT NULL,
    dev_server BOOLEAN NOT NULL,
    -- The u64 root key id stored as its two's-complement i64.
    macaroon_root_key BIGINT NOT NULL,
    pairing_secret BLOB NOT NULL,
    local_private_key BLOB NOT NULL,
    local_public_key BLOB NOT NULL UNIQUE,
    remote_public_key BLOB,
    privacy BOOLEAN NOT NULL,
    account_id BIGINT REFERENCES accounts(id) ON DELETE CASCADE,
    -- The id of the group's first session; NULL only while a row is inserted.
    group_id BIGINT REFERENCES sessions(id) ON DELETE CASCADE
);

CREATE INDEX sessions_type_idx ON sessions (type);
CREATE INDEX sessions_state_idx ON sessions (state);
CREATE INDEX sessions_group_id_idx ON sessions (group_id);

CREATE TABLE session_macaroon_permissions (
    id INTEGER PRIMARY KEY,
    session_id BIGINT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    entity TEXT NOT NULL,
    action TEXT NOT NULL,
    position INTEGER NOT NULL
);

CREATE INDEX sessions_mac_perms_idx ON session_macaroon_permissions (session_id, position);

CREATE TABLE session_macaroon_caveats (
    id INTEGER PRIMARY KEY,
    session_id BIGINT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    caveat_id BLOB NOT NULL,
    -- NULL for a first-party caveat.
    verification_id BLOB,
    -- NULL when empty.
    location TEXT,
    position INTEGER NOT NULL
);

CREATE INDEX sessions_mac_caveats_idx ON session_macaroon_caveats (session_id, position);

CREATE TABLE session_feature_configs (
    session_id BIGINT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    feature_name TEXT NOT NULL,
    config BLOB
);

CREATE UNIQUE INDEX session_feature_configs_unique ON session_feature_configs (session_id, feature_name);

CREATE TABLE session_privacy_flags (
    session_id BIGINT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    flag INTEGER NOT NULL
);

CREATE UNIQUE INDEX session_priv_flags_unique ON session_privacy_flags (session_id, flag);
