fn main() -> std::process::ExitCode {
    // One malloc arena for all threads: the OSTree pull, the blob copies and the engine
    // client's runtime would each get an arena of their own and keep its freed pages,
    // 6 MB of peak RSS on a 20,000-file pull, for no speed an I/O-bound updater notices.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists; it only sets an allocator parameter.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
    usb_update::main()
}
