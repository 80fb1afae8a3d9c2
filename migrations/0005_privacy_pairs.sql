-- Privacy mapper: real <-> pseudo values per session group
-- (docs/design.md §4, firewall; LiT's migration 000004).

CREATE TABLE privacy_pairs (
    group_id BIGINT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    real_val TEXT NOT NULL,
    pseudo_val TEXT NOT NULL
);

CREATE UNIQUE INDEX privacy_pairs_unique_real ON privacy_pairs (group_id, real_val);
CREATE UNIQUE INDEX privacy_pairs_unique_pseudo ON privacy_pairs (group_id, pseudo_val);
