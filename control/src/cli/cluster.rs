//! `berth cluster create|ls|describe|delete`.

use berth_proto::json::cluster_json;
use berth_proto::text::escape_control;
use berth_proto::v1::{Cluster, ClusterRef, ListClustersRequest};
use serde_json::Value;

use super::args::ClusterCommand;
use super::client::Admin;
use super::print_json;
use crate::view;

pub(super) async fn cluster(admin: &mut Admin, cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Create { name, json } => {
            let r = admin.client.create_cluster(ClusterRef { name }).await;
            let c = r.map_err(|s| admin.status(s))?.into_inner();
            one(&c, json, "ACTIVE")
        }
        ClusterCommand::Ls { json } => {
            let r = admin.client.list_clusters(ListClustersRequest {}).await;
            let list = r.map_err(|s| admin.status(s))?.into_inner().clusters;
            if json {
                print_json(&Value::Array(list.iter().map(cluster_json).collect()))
            } else {
                print!("{}", view::clusters_table(&list));
                Ok(())
            }
        }
        ClusterCommand::Describe { name, json } => {
            let r = admin.client.describe_cluster(ClusterRef { name }).await;
            let c = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&cluster_json(&c))
            } else {
                print!("{}", view::clusters_table(std::slice::from_ref(&c)));
                Ok(())
            }
        }
        ClusterCommand::Delete { name, json } => {
            let r = admin.client.delete_cluster(ClusterRef { name }).await;
            let c = r.map_err(|s| admin.status(s))?.into_inner();
            one(&c, json, "deleted")
        }
    }
}

/// The cluster a change returned: its JSON, or one line saying what it is.
fn one(c: &Cluster, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        print_json(&cluster_json(c))
    } else {
        println!("cluster {} {what}", escape_control(&c.name));
        Ok(())
    }
}
