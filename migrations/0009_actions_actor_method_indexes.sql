-- Indexes for listing actions by actor and by RPC method (crates/store-actions,
-- docs/design.md §4.3). Step 8 left these two filters to ride on another
-- filter's index; alone, a deep page of either then walked the whole log in
-- time order. With these, every filter a listing takes is served by an
-- index in listing order (created_at, id).
--
-- Like step 8, a step after the key-value step, so a migrated node builds
-- them once over the loaded rows.

CREATE INDEX actions_actor_created_idx ON actions (actor_name, created_at, id);
CREATE INDEX actions_method_created_idx ON actions (rpc_method, created_at, id);
