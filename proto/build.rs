//! Compiles the contracts with protox (no `protoc` needed) and generates the
//! prost messages and tonic clients and servers from the descriptor set.

use std::{env, error::Error, path::PathBuf};

const PROTOS: &[&str] = &[
    "fleet/users/v1/users.proto",
    "fleet/auth/v1/auth.proto",
    "fleet/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=google");

    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("fleet_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
