//! Enrollment and the fleet: a control plane, one-time activations, an
//! agent that enrolls, connects and reports its capacity.

use berth_e2e::{Agent, RunId, Server, describe_output, logical_cpus, said, str_field};
use serde_json::Value;

#[test]
fn agent_enrolls_connects_and_reports_capacity() {
    let run = RunId::new();
    let server = Server::start(&run);

    // `berth token create` (plain) prints the enroll line to copy.
    let out = server.cli(&["token", "create"]);
    assert!(
        out.status.success(),
        "`berth token create` failed\n{}",
        describe_output(&out)
    );
    assert!(
        said(&out).contains("berth-agent enroll"),
        "`berth token create` should print the `berth-agent enroll …` line\n{}",
        describe_output(&out)
    );

    // `--json` has the fields scripts rely on.
    let token = server.cli_json(&["token", "create", "--json"]);
    for key in ["activationId", "activationCode", "expiresAt", "caHash"] {
        assert!(
            token.get(key).is_some_and(|v| !v.is_null()),
            "`berth token create --json` lacks `{key}`: {token}"
        );
    }

    let mut agent = Agent::enroll(&server, &run);
    agent.start();
    let id = agent.instance_id().to_string();
    assert!(
        id.starts_with("i-"),
        "instance ids look like i-…, got {id:?}"
    );

    let instance = server.wait_connected(&id);
    let registered = &instance["registeredResources"];
    let cpu = registered["cpu"].as_u64();
    assert_eq!(
        cpu,
        Some(logical_cpus() * 1024),
        "registeredResources.cpu should be logical cores × 1024; instance: {instance}"
    );
    let memory = registered["memory"].as_u64().unwrap_or(0);
    assert!(
        memory > 0,
        "registeredResources.memory should be > 0 MiB; instance: {instance}"
    );

    // describe agrees with ls.
    let described = server.cli_json(&["instance", "describe", &id, "--json"]);
    assert_eq!(
        str_field(&described, "instanceId"),
        id,
        "`berth instance describe {id} --json` shows another instance: {described}"
    );

    // The agent's own view: `berth-agent status --json` and the local API.
    let status = agent.status_json();
    assert_eq!(
        str_field(&status, "instanceId"),
        id,
        "`berth-agent status --json` should show instanceId {id}: {status}"
    );
    let (code, body) = agent.api_request("/healthz");
    assert_eq!(code, 200, "GET /healthz answered {code}: {body}");
    let tasks = agent.api_get("/v1/tasks");
    assert!(
        tasks.is_array() || tasks.is_object(),
        "GET /v1/tasks should be JSON tasks, got {tasks}"
    );
}

#[test]
fn activation_is_single_use() {
    let run = RunId::new();
    let server = Server::start(&run);
    let first = Agent::enroll(&server, &run);
    let used = first.activation().clone();

    let mut second = Agent::new(&run);
    let out = second.enroll_with(&server, &used, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "enrolling a second host with a used activation should exit 1\n{}",
        describe_output(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("activation"),
        "the error should be about the activation\n{}",
        describe_output(&out)
    );
}

#[test]
fn enrolling_an_enrolled_host_again_is_a_no_op() {
    let run = RunId::new();
    let server = Server::start(&run);
    let mut agent = Agent::enroll(&server, &run);
    let activation = agent.activation().clone();

    let out = agent.enroll_with(&server, &activation, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "`berth-agent enroll` on an enrolled host (without --force) should exit 0\n{}",
        describe_output(&out)
    );
    assert!(
        said(&out).to_lowercase().contains("enrolled"),
        "`berth-agent enroll` on an enrolled host should say it is enrolled\n{}",
        describe_output(&out)
    );

    // The identity is intact: the agent still starts and connects.
    agent.start_connected(&server);
}

#[test]
fn describing_an_unknown_instance_fails_naming_it() {
    let run = RunId::new();
    let server = Server::start(&run);
    let out = server.cli(&["instance", "describe", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "`berth instance describe nope` should exit 1\n{}",
        describe_output(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "the error should name the instance `nope`\n{}",
        describe_output(&out)
    );
    // And an empty fleet is an empty list, not an error.
    let instances = server.instances();
    assert!(
        instances.is_empty(),
        "a new server should have no instances: {}",
        Value::Array(instances.clone())
    );
}
