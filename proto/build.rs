//! Compiles the contracts with protox (no `protoc` needed) and generates the
//! prost messages and tonic clients and servers from the descriptor set.

use std::{env, error::Error, path::PathBuf};

const PROTOS: &[&str] = &[
    "fleet/api/v1/options.proto",
    "fleet/users/v1/users.proto",
    "fleet/auth/v1/auth.proto",
    "fleet/stats/v1/stats.proto",
    "fleet/transfer/v1/transfer.proto",
    "fleet/notify/v1/notify.proto",
    "fleet/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=google");

    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by protox itself: going through prost_types would drop the
    // custom options (google.api.http) the gateway routes by.
    std::fs::write(out.join("fleet_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    // Type names let the validating codec find a message's rules by name.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::ValidatingCodec")
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;
    Ok(())
}
