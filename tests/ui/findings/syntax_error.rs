// A syntax error in a `.yard` file: the error names the file, line and
// column, and shows the line with the spot marked.
switchyard::process!("syntax_error.yard");

fn main() {}
