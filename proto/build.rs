//! Compiles `proto/relay.proto` with a pure-Rust protobuf compiler (protox), so building
//! Conclave never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/relay.proto");
    let fds = protox::compile(["proto/relay.proto"], ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
