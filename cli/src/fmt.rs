//! `switchyard fmt`: rewrites `.yard` files in the one canonical layout of
//! [`switchyard_dsl::format`], or, with `--check`, only says which files
//! would change and how, for CI. A file that does not parse is never touched.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use switchyard_dsl::Source;

use crate::output::{errln, out, outln};
use crate::read;

/// The exit code when a file would change (`--check`) or does not parse.
const FAILED: u8 = 1;
/// The exit code when a file cannot be read or written.
const UNUSABLE: u8 = 2;
/// Lines of unchanged text shown around each change in a diff.
const CONTEXT: usize = 3;

/// Rewrites `.yard` files in the canonical layout, keeping every comment.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// The `.yard` files to format, in place.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Writes nothing: prints the name of every file that is not formatted,
    /// with a diff of what formatting would change, and fails if there is one.
    #[arg(long)]
    pub check: bool,
}

const AFTER_HELP: &str = "\
The layout: four spaces per level, one item per line, a blank line between
states and between groups of items, `send` on one line when it fits in 100
columns. Comments stay where they were written; formatting twice changes
nothing, and never changes what a file means.

Exit codes:
  0  every file is formatted (or, with `--check`, already was)
  1  with `--check`, some file is not formatted; or some file does not parse
  2  a file cannot be read or written, or the command line is wrong

Examples:
  switchyard fmt examples/*.yard
  switchyard fmt --check orders.yard";

/// What became of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    /// Rewritten, or, under `--check`, would be.
    Changed,
    /// It does not parse; its errors have been printed.
    DoesNotParse,
    /// It cannot be read (nor is it text) or written; the cause has been printed.
    Unusable,
}

/// Formats every file; a file that cannot be formatted does not stop the
/// others, and the summary counts it.
pub fn run(args: &Args) -> ExitCode {
    let outcomes: Vec<Outcome> =
        args.files.iter().map(|path| format_file(path, args.check)).collect();
    let count = |outcome| outcomes.iter().filter(|o| **o == outcome).count();
    let changed = count(Outcome::Changed);
    let files = plural(args.files.len(), "file");
    let mut summary = if args.check {
        format!("checked the layout of {files}: {changed} would change")
    } else {
        format!("formatted {files}: {changed} changed")
    };
    for (outcome, words) in [
        (Outcome::DoesNotParse, "does not parse"),
        (Outcome::Unusable, "cannot be read or written"),
    ] {
        if count(outcome) > 0 {
            summary.push_str(&format!(", {} {words}", count(outcome)));
        }
    }
    errln!("{summary}");
    let status = if count(Outcome::Unusable) > 0 {
        UNUSABLE
    } else if count(Outcome::DoesNotParse) > 0 || (args.check && changed > 0) {
        FAILED
    } else {
        0
    };
    ExitCode::from(status)
}

/// Formats one file, or under `--check` prints the diff of what would
/// change. Every problem is printed here.
fn format_file(path: &Path, check: bool) -> Outcome {
    let name = path.display().to_string();
    let text = match read::source(path) {
        Ok(text) => text,
        Err(message) => {
            errln!("error: {message}");
            return Outcome::Unusable;
        }
    };
    let formatted = match switchyard_dsl::format(&text) {
        Ok(formatted) => formatted,
        Err(diagnostics) => {
            errln!("{}", Source::new(&name, &text).render_all(&diagnostics));
            return Outcome::DoesNotParse;
        }
    };
    if formatted == text {
        return Outcome::Unchanged;
    }
    if check {
        outln!("{name} is not formatted:");
        out!("{}", diff(&name, &text, &formatted));
    } else if let Err(err) = std::fs::write(path, &formatted) {
        errln!("error: cannot write `{name}`: {err}");
        return Outcome::Unusable;
    }
    Outcome::Changed
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edit {
    Same,
    Removed,
    Added,
}

/// A unified diff of two texts, line by line, with [`CONTEXT`] lines around
/// each change.
fn diff(name: &str, old: &str, new: &str) -> String {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    let edits = edits(&old, &new);

    let mut out = format!("--- {name}\n+++ {name} (formatted)\n");
    // Each edit with its line number in the old and the new text.
    let mut numbered = Vec::with_capacity(edits.len());
    let (mut o, mut n) = (0, 0);
    for edit in edits {
        numbered.push((edit, o, n));
        match edit {
            Edit::Same => (o, n) = (o + 1, n + 1),
            Edit::Removed => o += 1,
            Edit::Added => n += 1,
        }
    }
    let changes: Vec<usize> =
        (0..numbered.len()).filter(|&i| numbered[i].0 != Edit::Same).collect();
    let mut i = 0;
    while i < changes.len() {
        // A hunk grows while the next change is close enough to share context.
        let start = changes[i].saturating_sub(CONTEXT);
        let mut last = changes[i];
        while i + 1 < changes.len() && changes[i + 1] <= last + 2 * CONTEXT {
            i += 1;
            last = changes[i];
        }
        let end = (last + CONTEXT + 1).min(numbered.len());
        let hunk = &numbered[start..end];
        let old_len = hunk.iter().filter(|(e, _, _)| *e != Edit::Added).count();
        let new_len = hunk.iter().filter(|(e, _, _)| *e != Edit::Removed).count();
        let (_, old_start, new_start) = hunk[0];
        let _ = writeln!(out, "@@ -{},{old_len} +{},{new_len} @@", old_start + 1, new_start + 1);
        for &(edit, o, n) in hunk {
            let _ = match edit {
                Edit::Same => writeln!(out, " {}", old[o]),
                Edit::Removed => writeln!(out, "-{}", old[o]),
                Edit::Added => writeln!(out, "+{}", new[n]),
            };
        }
        i += 1;
    }
    out
}

/// The shortest edit from `old` to `new` by longest common subsequence, after
/// the common head and tail are set aside (formatting usually changes a few
/// lines of a long file). A middle too large for the table is shown as
/// removed and added whole rather than spending the memory.
fn edits(old: &[&str], new: &[&str]) -> Vec<Edit> {
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let tail =
        old[head..].iter().rev().zip(new[head..].iter().rev()).take_while(|(a, b)| a == b).count();
    let (a, b) = (&old[head..old.len() - tail], &new[head..new.len() - tail]);

    let mut edits = vec![Edit::Same; head];
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        edits.extend(std::iter::repeat_n(Edit::Removed, a.len()));
        edits.extend(std::iter::repeat_n(Edit::Added, b.len()));
    } else {
        // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
        let width = b.len() + 1;
        let mut lcs = vec![0u32; (a.len() + 1) * width];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i * width + j] = if a[i] == b[j] {
                    lcs[(i + 1) * width + j + 1] + 1
                } else {
                    lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                edits.push(Edit::Same);
                (i, j) = (i + 1, j + 1);
            } else if i < a.len()
                && (j == b.len() || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])
            {
                // Removed lines come before the lines that replace them.
                edits.push(Edit::Removed);
                i += 1;
            } else {
                edits.push(Edit::Added);
                j += 1;
            }
        }
    }
    edits.extend(std::iter::repeat_n(Edit::Same, tail));
    edits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_shows_each_change_with_three_lines_of_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\n";
        let new = "a\nB\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nM\nM2\nn\n";
        let expected = "\
--- x.yard
+++ x.yard (formatted)
@@ -1,5 +1,5 @@
 a
-b
+B
 c
 d
 e
@@ -10,5 +10,6 @@
 j
 k
 l
-m
+M
+M2
 n
";
        assert_eq!(diff("x.yard", old, new), expected);
    }

    #[test]
    fn close_changes_share_one_hunk() {
        let old = "a\nb\nc\nd\ne\n";
        let new = "A\nb\nc\nd\nE\n";
        let expected = "\
--- x.yard
+++ x.yard (formatted)
@@ -1,5 +1,5 @@
-a
+A
 b
 c
 d
-e
+E
";
        assert_eq!(diff("x.yard", old, new), expected);
    }

    /// A scratch file that is removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str, text: &str) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("switchyard-fmt-{}-{name}.yard", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Scratch(path)
        }

        fn text(&self) -> String {
            std::fs::read_to_string(&self.0).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const MESSY: &str = "process P { correlate by id: u64\ninitial state A { on X { -> Done } }\nfinal state Done }";
    const TIDY: &str = "\
process P {
    correlate by id: u64

    initial state A {
        on X {
            -> Done
        }
    }

    final state Done
}
";

    #[test]
    fn a_file_is_rewritten_in_place_and_then_left_alone() {
        let file = Scratch::new("rewrite", MESSY);
        assert_eq!(format_file(&file.0, false), Outcome::Changed);
        assert_eq!(file.text(), TIDY);
        assert_eq!(format_file(&file.0, false), Outcome::Unchanged);
    }

    #[test]
    fn check_writes_nothing_and_says_whether_a_file_would_change() {
        let messy = Scratch::new("check-messy", MESSY);
        assert_eq!(format_file(&messy.0, true), Outcome::Changed);
        assert_eq!(messy.text(), MESSY);
        let tidy = Scratch::new("check-tidy", TIDY);
        assert_eq!(format_file(&tidy.0, true), Outcome::Unchanged);
    }

    #[test]
    fn a_file_that_does_not_parse_fails_and_is_left_as_it_is() {
        let broken = Scratch::new("broken", "process P { => }");
        assert_eq!(format_file(&broken.0, false), Outcome::DoesNotParse);
        assert_eq!(broken.text(), "process P { => }");
    }

    #[test]
    fn a_file_that_cannot_be_read_is_unusable() {
        let missing = std::env::temp_dir().join("switchyard-fmt-no-such-file.yard");
        assert_eq!(format_file(&missing, false), Outcome::Unusable);
    }
}
