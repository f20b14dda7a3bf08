//! Compiles `proto/berth/v1/berth.proto` with protox (pure Rust, no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/berth/v1/berth.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        // no generated `connect` constructor: it would clash with the Fleet.Connect rpc,
        // and every client builds its own TLS channel anyway
        .build_transport(false)
        .build_server(true)
        // Task state is persisted by the agent; serde lets it store it as JSON.
        .type_attribute(
            ".berth.v1.TaskState",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".berth.v1.ContainerState",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".berth.v1.NetworkBinding",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".berth.v1.TaskEvent",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".berth.v1.DesiredTask",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        // Secret values: `Debug` is written by hand (lib.rs) and names no
        // value.
        .skip_debug([
            ".berth.v1.PutSecretRequest",
            ".berth.v1.TaskSecret",
            ".berth.v1.RegistryCredentials",
        ])
        // The agent persists desired tasks (state.json): never their
        // secrets.
        .field_attribute(".berth.v1.DesiredTask.secrets", "#[serde(skip)]")
        .field_attribute(
            ".berth.v1.DesiredTask.registry_credentials",
            "#[serde(skip)]",
        )
        .compile_fds(fds)?;
    Ok(())
}
