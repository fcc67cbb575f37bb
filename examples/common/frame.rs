//! The frame the data examples share: a usage error exits with status 2, a
//! missing data set prints how to fetch it and exits with success, and the
//! example's own error exits with status 1.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use hasten::train::data::mnist_present;

/// The parsed arguments of example `name`, or status 2 after printing the
/// usage error.
pub fn parsed<A>(name: &str, args: Result<A, String>) -> Result<A, ExitCode> {
    args.map_err(|e| {
        eprintln!("{name}: {e}");
        ExitCode::from(2)
    })
}

/// Whether the IDX files of `set` ("MNIST", "Fashion-MNIST") are absent
/// from `dir`; if so, says how to fetch them.
pub fn data_missing(set: &str, dir: &Path) -> bool {
    let missing = !mnist_present(dir);
    if missing {
        println!(
            "{set} not found in {}: run `bash scripts/fetch-datasets.sh` first (it puts the IDX files into data/{}).",
            dir.display(),
            set.to_lowercase()
        );
    }
    missing
}

/// The exit status of example `name`'s `result`, printing its error.
pub fn exit_code<E: Display>(name: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
