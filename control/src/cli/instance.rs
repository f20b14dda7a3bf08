//! `berth instance ls|describe|deregister|drain|activate|accept-capacity`.

use berth_proto::json::instance_json;
use berth_proto::text::escape_control;
use berth_proto::v1::{
    InstanceRef, ListInstancesRequest, ListTasksRequest, UpdateInstanceStateRequest,
};
use serde_json::Value;

use super::args::InstanceCommand;
use super::client::Admin;
use super::print_json;
use crate::view;

pub(super) async fn instance(admin: &mut Admin, cmd: InstanceCommand) -> anyhow::Result<()> {
    let now = berth_proto::now_ms();
    match cmd {
        InstanceCommand::Ls { cluster, json } => {
            let r = admin
                .client
                .list_instances(ListInstancesRequest {
                    cluster: cluster.unwrap_or_default(),
                })
                .await;
            let list = r.map_err(|s| admin.status(s))?.into_inner().instances;
            if json {
                print_json(&Value::Array(list.iter().map(instance_json).collect()))
            } else {
                print!("{}", view::instances_table(&list, now));
                Ok(())
            }
        }
        InstanceCommand::Describe { id, json } => {
            let r = admin
                .client
                .describe_instance(InstanceRef { instance_id: id })
                .await;
            let i = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&instance_json(&i))
            } else {
                let r = admin
                    .client
                    .list_tasks(ListTasksRequest {
                        instance_id: i.instance_id.clone(),
                        cluster: String::new(),
                    })
                    .await;
                let tasks = r.map_err(|s| admin.status(s))?.into_inner().tasks;
                print!("{}", view::instance_detail(&i, now));
                print!("{}", view::tasks_by_group(&tasks));
                Ok(())
            }
        }
        InstanceCommand::Deregister { id, json } => {
            let r = admin
                .client
                .deregister_instance(InstanceRef { instance_id: id })
                .await;
            let i = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&instance_json(&i))
            } else {
                println!("instance {} deregistered", escape_control(&i.instance_id));
                Ok(())
            }
        }
        InstanceCommand::Drain { id, json } => set_state(admin, id, "DRAINING", json).await,
        InstanceCommand::Activate { id, json } => set_state(admin, id, "ACTIVE", json).await,
        InstanceCommand::AcceptCapacity { id, json } => {
            let r = admin
                .client
                .accept_instance_capacity(InstanceRef { instance_id: id })
                .await;
            let i = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&instance_json(&i))
            } else {
                let reg = i.registered.unwrap_or_default();
                println!(
                    "instance {} registered with {} CPU units and {} MiB",
                    i.instance_id, reg.cpu, reg.memory_mib
                );
                Ok(())
            }
        }
    }
}

async fn set_state(admin: &mut Admin, id: String, status: &str, json: bool) -> anyhow::Result<()> {
    let r = admin
        .client
        .update_instance_state(UpdateInstanceStateRequest {
            cluster: String::new(),
            instance_id: id,
            status: status.to_owned(),
        })
        .await;
    let i = r.map_err(|s| admin.status(s))?.into_inner();
    if json {
        print_json(&instance_json(&i))
    } else {
        println!(
            "instance {} is {}",
            escape_control(&i.instance_id),
            escape_control(&i.status)
        );
        Ok(())
    }
}
