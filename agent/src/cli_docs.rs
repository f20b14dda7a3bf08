//! Shell completions and man pages made from a binary's clap definition.
//! Shared by `berth-agent` and `berth` (`berth-control` depends on this
//! crate already, for `berth dev`), so both binaries document themselves the
//! same way.
//!
//! # Design
//!
//! - `completions SHELL` is an ordinary, documented subcommand of both
//!   binaries (as in rustup, kubectl and nomad): [`print_completions`]
//!   prints the script clap_complete makes from the command definition.
//! - `man DIR` writes one roff page per command and visible subcommand
//!   ([`write_man_pages`]: `berth.1`, `berth-task.1`, `berth-task-run.1`,
//!   …) with clap_mangen, plus EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO
//!   sections. It is hidden, and it is added to the command line only when
//!   parsing ([`parse`]), never to the definition the completions and pages
//!   are made from: clap_complete offers hidden subcommands too, so a `man`
//!   in the definition would show up in every completion script.
//! - `packaging/gen-docs.sh` runs both on the built binaries; the packages
//!   ship the result.
//!
//! # Limitations
//!
//! The scripts complete subcommands, options and the values clap knows
//! (enums, paths); they do not ask the control plane for task or instance
//! ids.

use std::ffi::OsString;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, Command, Parser};
use clap_mangen::roff::{Roff, bold, italic, roman};

pub use clap_complete::Shell;

/// Name of the hidden subcommand that writes the man pages.
pub const MAN_SUBCOMMAND: &str = "man";

/// What both binaries answer (SPEC §2), for every page's EXIT STATUS.
const EXIT_STATUS: &str =
    "0 on success, 1 on failure (the message on stderr names what is wrong), 2 on bad usage.";

/// Sections of a binary's top man page that clap does not know about.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManSections {
    /// FILES: (path, what it is).
    pub files: &'static [(&'static str, &'static str)],
    /// ENVIRONMENT: (variable, what it does). Flags with an `env` show their
    /// variable in OPTIONS already.
    pub environment: &'static [(&'static str, &'static str)],
    /// Other section-1 pages for SEE ALSO (the binary's own pages are
    /// listed anyway).
    pub see_also: &'static [&'static str],
}

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot create the man page directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the man page {path}: {source}")]
    WritePage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the completion script to stdout: {0}")]
    Stdout(std::io::Error),
    #[error(
        "SOURCE_DATE_EPOCH={0:?}: expected the seconds since 1970-01-01 (before the year 10000)"
    )]
    SourceDateEpoch(String),
}

/// The completion script of `cmd` for `shell`.
pub fn completion_script(mut cmd: Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    // Into memory first: clap_complete panics on a failed write.
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// Checks the completion scripts of `cmd` (for the binaries' tests): the
/// bash, zsh and fish scripts each name every one of `words`, and bash loads
/// the bash one (`complete -p <name>` succeeds). The error says what failed.
pub fn check_completions(cmd: Command, words: &[&str]) -> Result<(), String> {
    let name = cmd.get_name().to_owned();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let script = completion_script(cmd.clone(), shell);
        let text = String::from_utf8_lossy(&script);
        if let Some(word) = words.iter().find(|w| !text.contains(**w)) {
            return Err(format!("the {shell} completions of {name} lack {word:?}"));
        }
        if shell == Shell::Bash {
            let mut bash = std::process::Command::new("bash")
                .arg("-c")
                .arg(r#"source /dev/stdin && complete -p "$1""#)
                .arg("bash")
                .arg(&name)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run bash: {e}"))?;
            if let Some(mut stdin) = bash.stdin.take() {
                stdin
                    .write_all(&script)
                    .map_err(|e| format!("cannot feed bash: {e}"))?;
            }
            let out = bash.wait_with_output().map_err(|e| format!("bash: {e}"))?;
            if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains(&name) {
                return Err(format!(
                    "bash cannot load the completions of {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    Ok(())
}

/// Checks the man pages of `cmd` (for the binaries' tests): written into
/// `dir`, there is one page per visible command and subcommand (found by
/// walking `cmd` itself, not by the generator's own list), and each starts
/// with `.TH <page> 1 <date>` and has the NAME, SYNOPSIS, OPTIONS, EXIT
/// STATUS and SEE ALSO sections. Returns the top page's text, for the
/// caller's own checks.
pub fn check_man_pages(cmd: Command, dir: &Path, sections: &ManSections) -> Result<String, String> {
    fn walk(cmd: &Command, name: &str, out: &mut Vec<String>) {
        out.push(format!("{name}.1"));
        for sub in cmd.get_subcommands() {
            if !sub.is_hide_set() && sub.get_name() != "help" {
                walk(sub, &format!("{name}-{}", sub.get_name()), out);
            }
        }
    }
    const DATE: &str = "2026-01-02";
    let name = cmd.get_name().to_owned();
    let mut want = Vec::new();
    walk(&cmd, &name, &mut want);
    want.sort();
    let written = write_man_pages(cmd, dir, DATE, sections).map_err(|e| e.to_string())?;
    let mut got: Vec<String> = written
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    got.sort();
    if got != want {
        return Err(format!("man pages written: {got:?}; expected: {want:?}"));
    }
    for page in &written {
        let text = std::fs::read_to_string(page)
            .map_err(|e| format!("cannot read {}: {e}", page.display()))?;
        let first_macro = text
            .lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .unwrap_or_default();
        let stem = page
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !first_macro.starts_with(&format!(".TH {stem} 1 {DATE} ")) {
            return Err(format!("{}: starts with {first_macro:?}", page.display()));
        }
        for section in ["NAME", "SYNOPSIS", "OPTIONS", "EXIT STATUS", "SEE ALSO"] {
            if !text.contains(section) {
                return Err(format!("{} lacks {section}", page.display()));
            }
        }
    }
    let top = dir.join(format!("{name}.1"));
    std::fs::read_to_string(&top).map_err(|e| format!("cannot read {}: {e}", top.display()))
}

/// Prints the completion script of `cmd` for `shell` on stdout.
pub fn print_completions(cmd: Command, shell: Shell) -> Result<(), DocsError> {
    let script = completion_script(cmd, shell);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(DocsError::Stdout)
}

/// The date of the man pages, `YYYY-MM-DD`: that of `SOURCE_DATE_EPOCH`
/// (seconds since 1970, as reproducible builds set it; build-packages.sh
/// sets it to the last commit's time) when set, else today.
pub fn man_date() -> Result<String, DocsError> {
    man_date_from(std::env::var("SOURCE_DATE_EPOCH").ok())
}

/// 9999-12-31T23:59:59Z, the last second RFC 3339 (and humantime) can write.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

fn man_date_from(source_date_epoch: Option<String>) -> Result<String, DocsError> {
    let when = match source_date_epoch.filter(|v| !v.trim().is_empty()) {
        Some(v) => match v.trim().parse::<u64>() {
            Ok(secs) if secs <= LAST_RFC3339_SECOND => {
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
            }
            _ => return Err(DocsError::SourceDateEpoch(v)),
        },
        None => std::time::SystemTime::now(),
    };
    let mut date = humantime::format_rfc3339_seconds(when).to_string();
    date.truncate("YYYY-MM-DD".len());
    Ok(date)
}

/// Writes `<name>.1` for `cmd` and every visible subcommand under it into
/// `dir` (created if needed), dated `date` ([`man_date`]); returns the
/// paths written, top page first.
pub fn write_man_pages(
    cmd: Command,
    dir: &Path,
    date: &str,
    sections: &ManSections,
) -> Result<Vec<PathBuf>, DocsError> {
    std::fs::create_dir_all(dir).map_err(|source| DocsError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut root = cmd.disable_help_subcommand(true);
    root.build();
    let source = match root.get_version() {
        Some(v) => format!("{} {v}", root.get_name()),
        None => root.get_name().to_owned(),
    };
    let mut written = Vec::new();
    for page in pages(&root, Vec::new()) {
        let path = dir.join(format!("{}.1", page.name));
        let mut roff = Vec::new();
        clap_mangen::Man::new(page.cmd.clone())
            // the date is not optional: an empty one shifts the next fields of .TH
            .date(date)
            .source(source.as_str())
            .manual("User Commands")
            .render(&mut roff)
            .and_then(|()| {
                roff.extend_from_slice(extra_sections(&page, sections).as_bytes());
                std::fs::write(&path, &roff)
            })
            .map_err(|source| DocsError::WritePage {
                path: path.clone(),
                source,
            })?;
        written.push(path);
    }
    Ok(written)
}

/// One man page: a command and where it sits in the tree.
struct Page {
    /// `berth-task-run`: the page's name and file name.
    name: String,
    cmd: Command,
    /// Page names from the top down to the parent.
    ancestors: Vec<String>,
    /// Page names of the visible subcommands.
    children: Vec<String>,
}

/// `cmd` (built) and its visible subcommands, depth first, parents first.
fn pages(cmd: &Command, ancestors: Vec<String>) -> Vec<Page> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned();
    let visible: Vec<&Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    let children = visible
        .iter()
        .map(|s| format!("{name}-{}", s.get_name()))
        .collect();
    let mut lineage = ancestors.clone();
    lineage.push(name.clone());
    let mut out = vec![Page {
        name,
        cmd: cmd.clone(),
        ancestors,
        children,
    }];
    for sub in visible {
        out.extend(pages(sub, lineage.clone()));
    }
    out
}

/// EXIT STATUS on every page; ENVIRONMENT and FILES on the top page; SEE
/// ALSO with the pages above and below this one. Roff text to append to a
/// page.
fn extra_sections(page: &Page, sections: &ManSections) -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"])
        .text([roman(EXIT_STATUS)]);
    let top = page.ancestors.is_empty();
    if top && !sections.environment.is_empty() {
        roff.control("SH", ["ENVIRONMENT"]);
        for (var, what) in sections.environment {
            roff.control("TP", [])
                .text([bold(*var)])
                .text([roman(*what)]);
        }
    }
    if top && !sections.files.is_empty() {
        roff.control("SH", ["FILES"]);
        for (path, what) in sections.files {
            roff.control("TP", [])
                .text([italic(*path)])
                .text([roman(*what)]);
        }
    }
    let mut see_also: Vec<&str> = page.ancestors.iter().map(String::as_str).collect();
    see_also.extend(page.children.iter().map(String::as_str));
    if top {
        see_also.extend(sections.see_also.iter().copied());
    }
    if !see_also.is_empty() {
        let last = see_also.len() - 1;
        let mut line = Vec::new();
        for (i, name) in see_also.into_iter().enumerate() {
            line.push(bold(name));
            line.push(roman(if i == last { "(1)" } else { "(1), " }));
        }
        roff.control("SH", ["SEE ALSO"]).text(line);
    }
    // Every rendered document starts with the same preamble (the string
    // that keeps apostrophes straight); the page has it already.
    let text = roff.render();
    let preamble = Roff::new().render();
    text.strip_prefix(&preamble).unwrap_or(&text).to_owned()
}

/// Parses the command line of `C` plus the hidden `man DIR`, which it
/// carries out itself. `Continue` with the parsed command line; `Break` with
/// the exit code when there is nothing left to do: `man` done (0) or failed
/// (1), `--help` or `--version` printed (0), bad usage (2).
pub fn parse<C: Parser>(sections: &ManSections) -> ControlFlow<ExitCode, C> {
    parse_from(std::env::args_os(), sections)
}

/// [`parse`] with the given arguments (the first is the program name).
pub fn parse_from<C, I, T>(args: I, sections: &ManSections) -> ControlFlow<ExitCode, C>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = C::command().subcommand(
        Command::new(MAN_SUBCOMMAND)
            .hide(true)
            .about("Write the man pages (one per command and subcommand) into DIR")
            .arg(
                Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Directory for the pages; created if missing"),
            ),
    );
    let matches = match cmd.try_get_matches_from_mut(args) {
        Ok(m) => m,
        Err(e) => return ControlFlow::Break(print_clap_error(&e)),
    };
    if let Some((MAN_SUBCOMMAND, sub)) = matches.subcommand() {
        let Some(dir) = sub.get_one::<PathBuf>("dir") else {
            eprintln!("error: {MAN_SUBCOMMAND} needs a directory");
            return ControlFlow::Break(ExitCode::from(2));
        };
        let written =
            man_date().and_then(|date| write_man_pages(C::command(), dir, &date, sections));
        return ControlFlow::Break(match written {
            Ok(paths) => {
                for p in paths {
                    println!("{}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        });
    }
    match C::from_arg_matches(&matches) {
        Ok(parsed) => ControlFlow::Continue(parsed),
        Err(e) => ControlFlow::Break(print_clap_error(&e.format(&mut cmd))),
    }
}

/// Prints a clap error or the help/version text; the exit code: 2 for bad
/// usage, 0 for `--help`/`--version`.
fn print_clap_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(if e.use_stderr() { 2 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Subcommand};

    /// berth-like: a global flag, nested subcommands, an alias.
    #[derive(Debug, Parser)]
    #[command(name = "demo", version, about = "demo tool")]
    struct Demo {
        /// Where the server is
        #[arg(long, global = true, env = "DEMO_ADDR", default_value = "x")]
        server: String,
        #[command(subcommand)]
        command: DemoCommand,
    }

    #[derive(Debug, Subcommand)]
    enum DemoCommand {
        /// Tasks
        #[command(subcommand)]
        Task(TaskCommand),
        /// Print completions
        Completions { shell: Shell },
    }

    #[derive(Debug, Subcommand)]
    enum TaskCommand {
        /// Run one
        Run {
            #[arg(long)]
            file: PathBuf,
        },
        /// List them
        #[command(visible_alias = "list")]
        Ls,
    }

    const SECTIONS: ManSections = ManSections {
        files: &[("/etc/demo.toml", "The config; it's commented.")],
        environment: &[("DEMO_LOG", "Log filter")],
        see_also: &["systemctl"],
    };

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script =
                String::from_utf8(completion_script(Demo::command(), shell)).expect("utf-8 script");
            for word in ["demo", "task", "run", "ls", "completions", "server"] {
                assert!(script.contains(word), "{shell} script lacks {word}");
            }
        }
    }

    #[test]
    fn man_pages_cover_every_visible_command_with_the_extra_sections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_man_pages(Demo::command(), dir.path(), "2026-01-02", &SECTIONS)
            .expect("man pages written");
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "demo.1",
                "demo-task.1",
                "demo-task-run.1",
                "demo-task-ls.1",
                "demo-completions.1"
            ]
        );
        let top = std::fs::read_to_string(&written[0]).expect("top page");
        assert!(
            top.contains(&format!(
                ".TH demo 1 2026-01-02 \"demo {}\" \"User Commands\"\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{top}"
        );
        for s in [
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "SEE ALSO",
            "DEMO_LOG",
            "/etc/demo.toml",
        ] {
            assert!(top.contains(s), "top page lacks {s}:\n{top}");
        }
        assert!(
            top.contains(
                "\\fBdemo\\-task\\fR(1), \\fBdemo\\-completions\\fR(1), \\fBsystemctl\\fR(1)\n"
            ),
            "{top}"
        );
        let run = std::fs::read_to_string(dir.path().join("demo-task-run.1")).expect("run page");
        assert!(run.contains(".TH demo-task-run 1"), "{run}");
        assert_eq!(run.matches(".ds Aq").count(), 2, "one preamble: {run}");
        assert!(run.contains("demo task run"), "synopsis: {run}");
        // global flags and their variables are on the subcommand pages too
        assert!(run.contains("DEMO_ADDR"), "{run}");
        assert!(!run.contains("SH FILES"), "{run}");
        assert!(
            run.contains("\\fBdemo\\fR(1), \\fBdemo\\-task\\fR(1)\n"),
            "{run}"
        );
    }

    #[test]
    fn the_date_comes_from_source_date_epoch() {
        assert_eq!(
            man_date_from(Some("1767312000".into())).expect("date"),
            "2026-01-02"
        );
        let e = man_date_from(Some("yesterday".into())).expect_err("not a number");
        assert!(
            e.to_string().contains("SOURCE_DATE_EPOCH=\"yesterday\""),
            "{e}"
        );
        man_date_from(Some(u64::MAX.to_string())).expect_err("past the year 9999");
        assert_eq!(
            man_date_from(Some(LAST_RFC3339_SECOND.to_string())).expect("date"),
            "9999-12-31"
        );
        for unset in [None, Some(String::new())] {
            let today = man_date_from(unset).expect("today");
            assert_eq!(today.len(), 10, "{today}");
        }
    }

    #[test]
    fn man_pages_into_an_unwritable_place_name_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").expect("file");
        let e = write_man_pages(Demo::command(), &file.join("man"), "2026-01-02", &SECTIONS)
            .expect_err("a file is in the way");
        assert!(e.to_string().contains("a-file/man"), "{e}");
    }

    #[test]
    fn parse_runs_the_hidden_man_and_passes_the_rest_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("pages");
        let flow = parse_from::<Demo, _, _>(
            [OsString::from("demo"), "man".into(), out.clone().into()],
            &SECTIONS,
        );
        assert!(matches!(flow, ControlFlow::Break(c) if c == ExitCode::SUCCESS));
        assert!(out.join("demo-task-run.1").is_file());
        assert!(!out.join("demo-man.1").exists(), "man documents itself");

        let flow = parse_from::<Demo, _, _>(["demo", "task", "ls"], &SECTIONS);
        assert!(matches!(
            flow,
            ControlFlow::Continue(Demo {
                command: DemoCommand::Task(TaskCommand::Ls),
                ..
            })
        ));
        for bad in [&["demo", "man"][..], &["demo", "nope"], &["demo"]] {
            let flow = parse_from::<Demo, _, _>(bad.iter().copied(), &SECTIONS);
            assert!(
                matches!(flow, ControlFlow::Break(c) if c == ExitCode::from(2)),
                "{bad:?} is bad usage"
            );
        }
        let script = String::from_utf8(completion_script(Demo::command(), Shell::Bash))
            .expect("utf-8 script");
        assert!(
            !script
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .any(|w| w == "man"),
            "completions offer the hidden man:\n{script}"
        );
    }
}
