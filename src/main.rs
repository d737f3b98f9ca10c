//! `conclave`: one binary, one subcommand per role, serving the built-in party kinds.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conclave::Conclave::new().main().await
}
