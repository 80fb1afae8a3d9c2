-- Actions: the audit log of RPC calls (docs/design.md §4, actions; LiT's
-- migration 000005).

CREATE TABLE actions (
    id INTEGER PRIMARY KEY,
    session_id BIGINT REFERENCES sessions(id) ON DELETE CASCADE,
    account_id BIGINT REFERENCES accounts(id) ON DELETE CASCADE,
    -- The full 8-byte big-endian macaroon root key id.
    macaroon_identifier BLOB,
    -- The text columns below hold NULL rather than an empty string.
    actor_name TEXT,
    feature_name TEXT,
    action_trigger TEXT,
    intent TEXT,
    structured_json_data BLOB,
    rpc_method TEXT NOT NULL,
    rpc_params_json BLOB,
    created_at TIMESTAMP NOT NULL,
    action_state SMALLINT NOT NULL,
    error_reason TEXT
);

CREATE INDEX actions_state_idx ON actions (action_state);
CREATE INDEX actions_session_id_idx ON actions (session_id);
CREATE INDEX actions_feature_name_idx ON actions (feature_name);
CREATE INDEX actions_created_at_id_idx ON actions (created_at, id);
