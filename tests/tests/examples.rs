//! The task definitions in examples/ are valid and run as documented.

use berth_e2e::{DEADLINE, Fleet, container_of, http_get, repo_root, str_field, wait_for};
use serde_json::Value;

const EXAMPLE_IMAGE: &str = "berth-example/busybox:latest";

fn example(name: &str) -> Value {
    let path = repo_root().join("examples").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn every_example_is_a_task_definition_of_the_local_image() {
    let dir = repo_root().join("examples");
    let mut seen = 0;
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
    {
        let path = entry.expect("a directory entry of examples/").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let def = example(&name);
        assert!(!str_field(&def, "family").is_empty(), "{name}: no family");
        let containers = def["containerDefinitions"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no containerDefinitions array"));
        assert!(!containers.is_empty(), "{name}: no containers");
        for c in containers {
            assert_eq!(
                str_field(c, "image"),
                EXAMPLE_IMAGE,
                "{name}: examples use the local image (examples/README.md says so)"
            );
        }
        seen += 1;
    }
    assert!(
        seen >= 2,
        "expected at least hello.json and two-containers.json in {}",
        dir.display()
    );
}

#[test]
fn hello_example_serves_http_on_its_dynamic_host_port() {
    let fleet = Fleet::start();
    let mut def = example("hello.json");
    def["family"] = Value::String(fleet.family("hello"));
    for c in def["containerDefinitions"]
        .as_array_mut()
        .expect("hello.json has containerDefinitions")
    {
        c["image"] = Value::String(fleet.image.tag().to_string());
    }
    let file = fleet.files.write("hello.json", &def.to_string());

    let task = fleet.run_task_wait(&file);
    let task_id = str_field(&task, "taskId").to_string();

    // init ran to completion first (web dependsOn init SUCCESS).
    let task = fleet
        .server
        .wait_task(&task_id, "init STOPPED with exitCode 0, web RUNNING", |t| {
            let init = container_of(t, "init");
            str_field(init, "lastStatus") == "STOPPED"
                && init["exitCode"] == 0
                && str_field(container_of(t, "web"), "lastStatus") == "RUNNING"
        });

    // hostPort 0 became a dynamic port, reported in networkBindings.
    let web = container_of(&task, "web");
    let binding = web["networkBindings"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["containerPort"] == 8080))
        .unwrap_or_else(|| panic!("web has no networkBinding for containerPort 8080: {task}"))
        .clone();
    let host_port = binding["hostPort"].as_u64().unwrap_or(0);
    assert!(
        host_port > 0,
        "hostPort should be a dynamic port: {binding}"
    );
    let addr = format!("127.0.0.1:{host_port}");
    let body = wait_for(
        &format!("web to answer on {addr}"),
        DEADLINE,
        || match http_get(&addr, "/") {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("{status}: {body}")),
            Err(e) => Err(e),
        },
    );
    assert_eq!(body.trim(), "ok", "web's index.html");

    // The health check reports healthy, and so does the task.
    fleet
        .server
        .wait_task(&task_id, "healthStatus HEALTHY", |t| {
            str_field(t, "healthStatus") == "HEALTHY"
                && str_field(container_of(t, "web"), "healthStatus") == "HEALTHY"
        });
}
