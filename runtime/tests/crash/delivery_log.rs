//! The delivery log of the crash test: one line `id name account n count`
//! per delivery, which the child's command handlers append and the test
//! reads back. A SIGKILL can cut the last write short, so the child trims
//! a torn tail before it appends and the parser leaves one out; a torn line
//! anywhere else is damage and an error.

// The test and the child share this file, and each uses only part of it.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

/// One line of the delivery log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub name: String,
    pub account: u32,
    pub n: u32,
    pub count: u32,
}

/// The deliveries of a log. What follows the last newline is a write that
/// a kill cut short, even when it reads as a delivery (`… 10 1` is the
/// start of `… 10 10`): its handler never returned, so the command is
/// delivered again and leaving it out loses nothing. Every line that ends
/// in a newline was written whole and must read.
pub fn parse(text: &str) -> Result<Vec<Delivery>, String> {
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .enumerate()
        .map(|(index, line)| {
            Delivery::read(line).ok_or_else(|| {
                format!(
                    "line {} of the delivery log is not `id name account n count`: {line:?}",
                    index + 1
                )
            })
        })
        .collect()
}

/// Cuts a torn last line off the log at `path`, so that the next delivery
/// starts a line of its own instead of gluing itself to the torn one,
/// which would make a torn line in the middle of the log.
pub fn trim_torn_tail(path: &Path) -> std::io::Result<()> {
    let bytes = match std::fs::read(path) {
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        read => read?,
    };
    let complete = bytes.iter().rposition(|byte| *byte == b'\n').map_or(0, |end| end + 1);
    if complete < bytes.len() {
        OpenOptions::new().write(true).open(path)?.set_len(complete as u64)?;
    }
    Ok(())
}

impl Delivery {
    /// The line of this delivery, newline included, for one write.
    pub fn line(&self) -> String {
        let Delivery { id, name, account, n, count } = self;
        format!("{id} {name} {account} {n} {count}\n")
    }

    fn read(line: &str) -> Option<Delivery> {
        let fields: Vec<&str> = line.split(' ').collect();
        let [id, name, account, n, count] = fields[..] else { return None };
        Some(Delivery {
            id: id.to_owned(),
            name: name.to_owned(),
            account: account.parse().ok()?,
            n: n.parse().ok()?,
            count: count.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190a6f5-0000-7000-8000-000000000001";

    fn record(account: u32, n: u32, count: u32) -> Delivery {
        Delivery { id: ID.to_owned(), name: "Record".to_owned(), account, n, count }
    }

    /// A kill in the middle of the write of `Record 7 10 10` leaves
    /// `Record 7 10 1` without its newline: a prefix that still reads as a
    /// delivery, with a count that would look like a deposit counted twice.
    #[test]
    fn a_torn_last_line_is_left_out() {
        let log = format!("{ID} Record 3 1 1\n{ID} Record 7 10 1");
        assert_eq!(parse(&log), Ok(vec![record(3, 1, 1)]));
    }

    /// Only the last write can be cut by a kill (the child trims a torn
    /// tail before it appends), so a cut line before the last is damage.
    #[test]
    fn a_torn_line_before_the_last_is_an_error() {
        let log = format!("{ID} Record 3 1 1\n{ID} Record 7 1\n{ID} Record 3 2 2\n");
        let error = parse(&log).unwrap_err();
        assert!(error.contains("line 2"), "the error does not name line 2: {error}");
    }

    #[test]
    fn complete_lines_are_all_read_back() {
        let lines = [record(3, 1, 1), Delivery { name: "Report".to_owned(), ..record(3, 0, 6) }];
        let log: String = lines.iter().map(Delivery::line).collect();
        assert_eq!(parse(&log), Ok(lines.to_vec()));
    }

    #[test]
    fn trimming_cuts_only_a_torn_tail() {
        // The system's temporary directory: this module is built into the
        // crash test's child binary too, where Cargo sets no test directory.
        let path = std::env::temp_dir().join(format!("trim-{}.log", std::process::id()));
        let whole = format!("{ID} Record 3 1 1\n");
        for (log, trimmed) in [(format!("{whole}{ID} Rec"), &whole), (whole.clone(), &whole)] {
            std::fs::write(&path, log).unwrap();
            trim_torn_tail(&path).unwrap();
            assert_eq!(&std::fs::read_to_string(&path).unwrap(), trimmed);
        }
        std::fs::remove_file(&path).unwrap();
    }
}
