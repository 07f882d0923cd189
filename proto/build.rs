//! Compiles the protos with protox (no protoc needed) and generates the tonic
//! code. Each API's encoded descriptor set is written to OUT_DIR for server
//! reflection.

use prost::Message;
use std::{env, fs, path::PathBuf};

const APIS: [(&str, &str); 2] = [
    (
        "horoscoper/v1/horoscoper.proto",
        "horoscoper_v1_descriptor.bin",
    ),
    (
        "horoscoper/mesh/v1/mesh.proto",
        "horoscoper_mesh_v1_descriptor.bin",
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for (file, descriptor) in APIS {
        println!("cargo:rerun-if-changed={file}");
        let fds = protox::compile([file], ["."])?;
        fs::write(out_dir.join(descriptor), fds.encode_to_vec())?;
        tonic_prost_build::configure()
            .codec_path("crate::codec::SmallCodec")
            .compile_fds(fds)?;
    }
    Ok(())
}
