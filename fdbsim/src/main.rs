//! `conclave-fdbsim`: runs the FoundationDB test double (see the crate docs) and writes a
//! cluster file for it, for trying `--storage fdb` on a machine without FoundationDB.
//! Not a database: its data lives in memory and is gone when it stops.

use std::net::SocketAddr;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(cluster_file)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: conclave-fdbsim LISTEN_ADDR CLUSTER_FILE   (e.g. 127.0.0.1:4500 fdb.cluster)"
        );
        std::process::exit(2);
    };
    let addr: SocketAddr = listen.parse()?;
    let server = conclave_fdbsim::SimServer::start(addr).await?;
    server.write_cluster_file(std::path::Path::new(&cluster_file))?;
    eprintln!(
        "fdbsim: a FoundationDB test double (in memory, not durable) on {}; cluster file {cluster_file}",
        server.addr()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
