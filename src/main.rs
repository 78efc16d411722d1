//! The `mnigs` command: parses the command line and hands it to the library.

fn main() {
    let args: mnigs::cli::Args = argh::from_env();
    std::process::exit(mnigs::cli::main(args));
}
