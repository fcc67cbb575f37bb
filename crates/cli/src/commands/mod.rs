//! One module per subcommand.

mod bench;
mod compress;
mod eval;
mod inspect;
mod run;
mod train;

pub(crate) use bench::bench;
pub(crate) use compress::compress;
pub(crate) use eval::eval;
pub(crate) use inspect::inspect;
pub(crate) use run::run_model;
pub(crate) use train::{train, TrainArgs};
