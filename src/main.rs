//! `conclave`: one binary, one subcommand per role, serving the built-in party kinds.

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads start: they keep the malloc arena they first use.
    conclave::memory::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(conclave::Conclave::new().main())
}
