fn main() -> std::process::ExitCode {
    openchami::cli::main()
}
