//! `berth-e2e-secret-scan DIR`: after the whole suite ran with
//! `BERTH_E2E_CAPTURE=DIR`, checks that no captured secret appears in any
//! captured log (see `berth_e2e::capture`). Exit 0: nothing found; 1: a
//! secret was found (each named with its log), or the capture is empty or
//! unreadable; 2: bad usage.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: berth-e2e-secret-scan DIR");
        return ExitCode::from(2);
    };
    let report = match berth_e2e::capture::scan(std::path::Path::new(dir)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("secret scan: {e}");
            return ExitCode::FAILURE;
        }
    };
    if report.logs == 0 || report.secrets == 0 {
        eprintln!(
            "secret scan: the capture in {dir} holds {} logs and {} secrets: nothing to check (was the suite run with BERTH_E2E_CAPTURE={dir}?)",
            report.logs, report.secrets
        );
        return ExitCode::FAILURE;
    }
    for (what, log) in &report.found {
        eprintln!("secret scan: {what} found in {log}");
    }
    println!(
        "secret scan: {} logs of the end-to-end suite, {} secrets: {} found",
        report.logs,
        report.secrets,
        report.found.len()
    );
    if report.found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
