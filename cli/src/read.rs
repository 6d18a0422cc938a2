//! Reading a `.yard` file for a command. A file that cannot be read, or is
//! not UTF-8 text, gives a message in words that says where the first
//! invalid byte is, for every command alike.

use std::path::Path;

/// The text of the file at `path`, or what keeps it from being read.
pub fn source(path: &Path) -> Result<String, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|err| format!("cannot read `{name}`: {err}"))?;
    String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        // The bytes before the invalid one are valid UTF-8, so they count as characters.
        let column = std::str::from_utf8(&valid[line_start..]).map_or(0, |s| s.chars().count()) + 1;
        format!(
            "`{name}` is not UTF-8 text: the byte at line {line}, column {column} is not valid\n  help: save the file as UTF-8"
        )
    })
}
