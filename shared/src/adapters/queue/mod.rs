//! Queue adapters: the in-process queue (`stepper-local`), SQS (the Lambda deployment), and the queue
//! of the functions that never send. The messages they carry are the domain's (`crate::domain::message`).

pub mod local;
pub mod refusing;
#[cfg(feature = "sqs")]
pub mod sqs;
