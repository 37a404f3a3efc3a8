//! Pure domain types: no I/O.

pub mod cnj;
pub mod names;
pub mod sealing;
pub mod status;

pub use cnj::ProcessNumber;
pub use status::{DocumentStatus, JobStatus};
