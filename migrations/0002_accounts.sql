-- Accounts: off-chain balance accounts, their payments and invoices, and the
-- last invoice indexes seen from lnd (docs/design.md §4.2).
--
-- Written in the portable dialect described in crates/sqldb/src/schema.rs.

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    -- The legacy 8-byte account id, big-endian, as a signed 64-bit integer.
    alias BIGINT NOT NULL UNIQUE,
    -- NULL means no label.
    label TEXT UNIQUE,
    type SMALLINT NOT NULL,
    initial_balance_msat BIGINT NOT NULL,
    -- May be negative.
    current_balance_msat BIGINT NOT NULL,
    last_updated TIMESTAMP NOT NULL,
    -- 0001-01-01 00:00:00 means the account never expires.
    expiration TIMESTAMP NOT NULL
);

CREATE TABLE account_payments (
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hash BLOB NOT NULL,
    status SMALLINT NOT NULL,
    full_amount_msat BIGINT NOT NULL
);

CREATE UNIQUE INDEX account_payments_unique ON account_payments (account_id, hash);

CREATE TABLE account_invoices (
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hash BLOB NOT NULL
);

CREATE UNIQUE INDEX account_invoices_unique ON account_invoices (account_id, hash);

-- Rows: last_add_index and last_settle_index.
CREATE TABLE account_indices (
    name TEXT NOT NULL UNIQUE,
    value BIGINT NOT NULL
);
