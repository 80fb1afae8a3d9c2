//! The accounts tables, made by schema step 2 ([`STEP`], the file
//! `migrations/0002_accounts.sql`). Their names never change: applied
//! schema steps are never edited.

use sqldb::schema::{Step, StepKind};
use sqldb::sea_query::Iden;

/// The step that makes these tables: nodestore's step 2, litd's version 1.
/// The migrator puts it in the schema's one ordered list.
pub const STEP: Step = Step {
    version: 2,
    name: "accounts",
    kind: StepKind::Sql(include_str!("../../../../migrations/0002_accounts.sql")),
};

/// `accounts`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum Accounts {
    /// The table.
    Table,
    /// SQL id.
    Id,
    /// The account id as a big-endian i64.
    Alias,
    /// NULL for no label.
    Label,
    /// Account type.
    Type,
    /// Initial balance.
    InitialBalanceMsat,
    /// Current balance.
    CurrentBalanceMsat,
    /// Last change.
    LastUpdated,
    /// Expiry; the zero time for none.
    Expiration,
}

/// `account_invoices`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum AccountInvoices {
    /// The table.
    Table,
    /// `accounts.id`.
    AccountId,
    /// Invoice hash.
    Hash,
}

/// `account_payments`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum AccountPayments {
    /// The table.
    Table,
    /// `accounts.id`.
    AccountId,
    /// Payment hash.
    Hash,
    /// Status number.
    Status,
    /// Amount plus fees.
    FullAmountMsat,
}

/// `account_indices`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum AccountIndices {
    /// The table.
    Table,
    /// `last_add_index` or `last_settle_index`.
    Name,
    /// The index.
    Value,
}

/// The row name of the last add index.
pub const LAST_ADD_INDEX: &str = "last_add_index";
/// The row name of the last settle index.
pub const LAST_SETTLE_INDEX: &str = "last_settle_index";
