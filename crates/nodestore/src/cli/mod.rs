//! The `nodestore` command's parts: one module per command, and what they
//! share (printing, progress bars, typed targets).

#[macro_use]
pub(crate) mod output;
pub(crate) mod demo;
pub(crate) mod dump;
pub(crate) mod logging;
pub(crate) mod migrate;
pub(crate) mod progress;
pub(crate) mod status;
pub(crate) mod target;
pub(crate) mod verify;
