-- Indexes for listing actions (crates/store-actions): every filter the RPC
-- layer uses, followed by the listing order (created_at, id), so a page is
-- read straight from an index in order instead of sorting every match.
--
-- Group filters go through sessions_group_id_idx and then the session
-- index. Actor and method filters get their indexes in step 9
-- (docs/design.md §4.3).
--
-- A step after the key-value step on purpose: on a migrated node these
-- indexes are built once over the loaded rows, not row by row.

CREATE INDEX actions_session_created_idx ON actions (session_id, created_at, id);
CREATE INDEX actions_feature_created_idx ON actions (feature_name, created_at, id);
CREATE INDEX actions_state_created_idx ON actions (action_state, created_at, id);
