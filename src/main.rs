fn main() -> std::process::ExitCode {
    usb_update::cli::main()
}
