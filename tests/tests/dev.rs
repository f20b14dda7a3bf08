//! `berth dev`: the control plane and one agent in one process, the
//! README's first command.

use berth_e2e::{
    DEADLINE, Dev, RunId, Scratch, TestImage, list_of, repo_root, str_field, wait_for,
};
use serde_json::Value;

/// `examples/<name>` with every container's image replaced by `image`.
fn example_with_image(name: &str, image: &str) -> String {
    let path = repo_root().join("examples").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut def: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let containers = def["containerDefinitions"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("{} has no containerDefinitions array", path.display()));
    for c in containers {
        c["image"] = Value::String(image.to_string());
    }
    def.to_string()
}

#[test]
fn berth_dev_runs_the_example_and_exits_on_sigterm() {
    let run = RunId::new();
    let image = TestImage::build(&run);
    let files = Scratch::new(&run);
    let file = files.write(
        "two-containers.json",
        &example_with_image("two-containers.json", image.tag()),
    );

    let mut dev = Dev::start(&run, Some(&file));

    // It tells the user how to submit a task.
    wait_for(
        "berth dev to print how to submit a task (`berth task run`)",
        DEADLINE,
        || {
            dev.assert_running("waiting for its instructions");
            let stdout = dev.stdout();
            if stdout.contains("berth task run") {
                Ok(())
            } else {
                Err(format!("stdout so far: {stdout:?}"))
            }
        },
    );

    // Its embedded agent shows up, and the --run task reaches RUNNING.
    let instance_id = dev.instance_id();
    let cli = dev.cli().clone();
    let task = wait_for(
        "the two-containers task of berth dev --run to be RUNNING",
        DEADLINE,
        || {
            dev.assert_running("waiting for the task");
            let tasks = list_of(&cli.json(&["task", "ls", "--json"]), "tasks");
            match tasks
                .iter()
                .find(|t| str_field(t, "family") == "two-containers")
            {
                Some(t) if str_field(t, "lastStatus") == "RUNNING" => Ok(t.clone()),
                _ => Err(format!("tasks: {}", Value::Array(tasks.clone()))),
            }
        },
    );
    assert_eq!(
        str_field(&task, "instanceId"),
        instance_id,
        "the task should run on berth dev's own agent: {task}"
    );

    let status = dev.terminate();
    assert!(
        status.success(),
        "berth dev should exit 0 on SIGTERM, exited with {status}; log: {}",
        berth_e2e::log_tail(&dev.dir().join("dev.log"), 60)
    );
}
