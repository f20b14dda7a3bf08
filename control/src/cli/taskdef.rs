//! `berth taskdef register|ls|describe|deregister`.
//!
//! `--json` prints ECS' shapes: `describe-task-definition`
//! (`{"taskDefinition": {…}}`, which `berth task run --task-definition`
//! and `taskdef register` take back as input) and `list-task-definitions`
//! (`{"taskDefinitionArns": […]}`).

use std::path::Path;

use anyhow::{Context, anyhow};
use berth_proto::json::task_definition_arn;
use berth_proto::text::escape_control;
use berth_proto::v1::{
    ListTaskDefinitionsRequest, RegisterTaskDefinitionRequest, RegisteredTaskDefinition,
    TaskDefinitionRef,
};
use serde_json::json;

use super::args::TaskdefCommand;
use super::client::Admin;
use super::print_json;
pub use crate::server::taskdefs::task_definition_json;
use crate::view;

fn print(r: &RegisteredTaskDefinition, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&task_definition_json(r))
    } else {
        print!("{}", view::task_definition_detail(r));
        Ok(())
    }
}

pub(super) async fn taskdef(admin: &mut Admin, cmd: TaskdefCommand) -> anyhow::Result<()> {
    match cmd {
        TaskdefCommand::Register { file, json } => register(admin, &file, json).await,
        TaskdefCommand::Ls {
            family,
            status,
            json,
        } => {
            let r = admin
                .client
                .list_task_definitions(ListTaskDefinitionsRequest {
                    family: family.unwrap_or_default(),
                    status: status.to_ascii_uppercase(),
                })
                .await;
            let names = r
                .map_err(|s| admin.status(s))?
                .into_inner()
                .task_definitions;
            if json {
                print_json(&json!({
                    "taskDefinitionArns": names.iter().map(|n| task_definition_arn(n)).collect::<Vec<_>>(),
                }))
            } else {
                for n in &names {
                    println!("{}", escape_control(n));
                }
                Ok(())
            }
        }
        TaskdefCommand::Describe {
            task_definition,
            json,
        } => {
            let r = admin
                .client
                .describe_task_definition(TaskDefinitionRef { task_definition })
                .await;
            print(&r.map_err(|s| admin.status(s))?.into_inner(), json)
        }
        TaskdefCommand::Deregister {
            task_definition,
            json,
        } => {
            let r = admin
                .client
                .deregister_task_definition(TaskDefinitionRef { task_definition })
                .await;
            let r = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&task_definition_json(&r))
            } else {
                println!(
                    "{}",
                    escape_control(&format!("{}:{}", r.family, r.revision))
                );
                Ok(())
            }
        }
    }
}

async fn register(admin: &mut Admin, file: &Path, json: bool) -> anyhow::Result<()> {
    let definition = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read task definition {}", file.display()))?;
    let parsed =
        berth_taskdef::parse(&definition).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    for w in &parsed.warnings {
        eprintln!("warning: {}: {w}", file.display());
    }
    let r = admin
        .client
        .register_task_definition(RegisterTaskDefinitionRequest {
            task_definition_json: definition,
            reuse_latest_if_equal: false,
        })
        .await;
    let r = r.map_err(|s| admin.status(s))?.into_inner();
    if json {
        print_json(&task_definition_json(&r))
    } else {
        println!(
            "{}",
            escape_control(&format!("{}:{}", r.family, r.revision))
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_is_the_describe_task_definition_shape_and_parses_back() {
        let r = RegisteredTaskDefinition {
            family: "web".into(),
            revision: 3,
            status: "INACTIVE".into(),
            task_definition_json: r#"{"family":"web","requiresCompatibilities":["EXTERNAL"],"containerDefinitions":[{"name":"web","image":"nginx:1","memory":64}]}"#.into(),
            registered_at_ms: 1_700_000_000_000,
            deregistered_at_ms: 1_700_000_001_000,
            warnings: Vec::new(),
        };
        let v = task_definition_json(&r);
        let td = &v["taskDefinition"];
        assert_eq!(td["family"], "web");
        assert_eq!(td["revision"], 3);
        assert_eq!(td["status"], "INACTIVE");
        assert_eq!(
            td["taskDefinitionArn"],
            "arn:aws:ecs:local:000000000000:task-definition/web:3"
        );
        assert_eq!(td["compatibilities"], json!(["EC2", "EXTERNAL"]));
        assert_eq!(td["requiresCompatibilities"], json!(["EXTERNAL"]));
        assert_eq!(td["registeredAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(td["deregisteredAt"], "2023-11-14T22:13:21.000Z");
        assert_eq!(td["containerDefinitions"][0]["image"], "nginx:1");
        // What describe prints, berth takes back.
        let parsed = berth_taskdef::parse(&v.to_string()).expect("parses back");
        assert_eq!(parsed.definition.family, "web");
        let active = RegisteredTaskDefinition {
            deregistered_at_ms: 0,
            ..r
        };
        assert!(
            task_definition_json(&active)["taskDefinition"]
                .get("deregisteredAt")
                .is_none()
        );
    }
}
