//! The admin API of instance attributes (ECS `PutAttributes`,
//! `DeleteAttributes`, `ListAttributes`; SPEC §6).
//!
//! An instance has the attributes its agent sends in every Hello (the
//! built-in `ecs.*` / `berth.*` ones and those of its config's
//! `[attributes]` table) and the custom ones an operator puts here, stored
//! apart in the instance row (`custom_attributes_json`) so that the next
//! Hello does not wipe them. Placement and the API see both, the custom ones
//! over the agent's ([`InstanceRecord::all_attributes`]); a custom attribute
//! never takes a built-in name.
//!
//! The handlers only translate and check what the request itself says (its
//! size, duplicate names, its cluster against the instance's); the rules
//! on the stored attributes (names, values, how many, a deregistered
//! instance) are the store's, in the transaction that changes them.
//! Errors: INVALID_ARGUMENT for a bad name, value or count, NOT_FOUND for an
//! unknown instance or cluster, an instance of another cluster or an
//! attribute that was never put, FAILED_PRECONDITION for a deregistered
//! instance or one with no room left.

use std::collections::BTreeMap;

use berth_proto::attributes::MAX_PER_CALL;
use berth_proto::text::shown;
use berth_proto::v1::{
    Attribute, DeleteAttributesRequest, Instance, ListAttributesRequest, ListAttributesResponse,
    PutAttributesRequest,
};
use tonic::Status;
use tracing::info;

use super::admin::instance_message;
use super::clusters::cluster_status;
use super::core::Core;
use super::store::{DEFAULT_CLUSTER, INACTIVE, InstanceRecord, Store, StoreError};

/// The status of a store error from an attribute operation.
pub(crate) fn attribute_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidAttribute(_)
        | StoreError::TooManyAttributesInCall(_)
        | StoreError::NoAttributesInCall => Status::invalid_argument(e.to_string()),
        StoreError::NoAttribute { .. } | StoreError::WrongCluster { .. } => {
            Status::not_found(e.to_string())
        }
        StoreError::TooManyAttributes { .. } => Status::failed_precondition(e.to_string()),
        other => cluster_status(other),
    }
}

/// The cluster a request names: `default` when it names none.
fn cluster_of(cluster: &str) -> String {
    let c = cluster.trim();
    if c.is_empty() {
        DEFAULT_CLUSTER.to_owned()
    } else {
        c.to_owned()
    }
}

/// The instance `id` of `cluster`: [`StoreError::NoInstance`] when there is
/// none, [`StoreError::WrongCluster`] when it is in another cluster.
fn instance_in(s: &dyn Store, id: &str, cluster: &str) -> Result<InstanceRecord, StoreError> {
    let i = s
        .instance(id)?
        .ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
    if i.cluster != cluster {
        return Err(StoreError::WrongCluster {
            instance_id: id.to_owned(),
            cluster: cluster.to_owned(),
            actual: i.cluster,
        });
    }
    Ok(i)
}

/// The request's attributes as a map: at most [`MAX_PER_CALL`], each name
/// once, each for the request's instance.
fn requested(r: &PutAttributesRequest, id: &str) -> Result<BTreeMap<String, String>, Status> {
    if r.attributes.len() > MAX_PER_CALL {
        return Err(attribute_status(StoreError::TooManyAttributesInCall(
            r.attributes.len(),
        )));
    }
    let mut out = BTreeMap::new();
    for a in &r.attributes {
        let target = a.instance_id.trim();
        if !target.is_empty() && target != id {
            return Err(Status::invalid_argument(format!(
                "attribute {} names instance {}, the request instance {id}: put the attributes of one instance per call",
                shown(&a.name),
                shown(target)
            )));
        }
        if out.insert(a.name.clone(), a.value.clone()).is_some() {
            return Err(Status::invalid_argument(format!(
                "attribute {} is named twice",
                shown(&a.name)
            )));
        }
    }
    Ok(out)
}

/// A change of the custom attributes of instance `id` of `cluster` (`op`
/// on the store, in one transaction), logged with the names it names; the
/// instance after it, as the API shows it.
async fn change(
    core: &Core,
    what: &'static str,
    (id, cluster): (String, String),
    names: Vec<String>,
    caller: &str,
    op: impl FnOnce(&dyn Store, &str) -> Result<InstanceRecord, StoreError> + Send + 'static,
) -> Result<Instance, Status> {
    let lookup = id.clone();
    let (i, usage) = core
        .db(what, move |s| {
            instance_in(s, &lookup, &cluster)?;
            let i = op(s, &lookup)?;
            let usage = s.usage()?.get(&lookup).copied().unwrap_or_default();
            Ok::<_, StoreError>((i, usage))
        })
        .await
        .map_err(attribute_status)?;
    info!(op = what, instance_id = %id, names = ?names, by = %caller, "custom attributes changed");
    let connected = core.sessions().is_connected(&id);
    Ok(instance_message(&i, usage, connected))
}

/// The instance and cluster a request names.
fn target(instance_id: &str, cluster: &str) -> (String, String) {
    (instance_id.trim().to_owned(), cluster_of(cluster))
}

pub(crate) async fn put(
    core: &Core,
    r: PutAttributesRequest,
    caller: &str,
) -> Result<Instance, Status> {
    let target = target(&r.instance_id, &r.cluster);
    let put = requested(&r, &target.0)?;
    let names = put.keys().cloned().collect();
    change(
        core,
        "put_attributes",
        target,
        names,
        caller,
        move |s, id| s.put_attributes(id, &put),
    )
    .await
}

pub(crate) async fn delete(
    core: &Core,
    r: DeleteAttributesRequest,
    caller: &str,
) -> Result<Instance, Status> {
    if r.names.len() > MAX_PER_CALL {
        return Err(attribute_status(StoreError::TooManyAttributesInCall(
            r.names.len(),
        )));
    }
    let target = target(&r.instance_id, &r.cluster);
    let names = r.names;
    change(
        core,
        "delete_attributes",
        target,
        names.clone(),
        caller,
        move |s, id| s.delete_attributes(id, &names),
    )
    .await
}

/// Every attribute of the cluster's registered instances (or of the one
/// named, registered or not), by instance in registration order, then by
/// name.
pub(crate) async fn list(
    core: &Core,
    r: ListAttributesRequest,
) -> Result<ListAttributesResponse, Status> {
    let cluster = cluster_of(&r.cluster);
    let id = r.instance_id.trim().to_owned();
    let instances = core
        .db("list_attributes", move |s| {
            if !id.is_empty() {
                return Ok(vec![instance_in(s, &id, &cluster)?]);
            }
            if s.cluster(&cluster)?.is_none() {
                return Err(StoreError::NoCluster(cluster));
            }
            let all = s.instances()?;
            Ok(all
                .into_iter()
                .filter(|i| i.cluster == cluster && i.status != INACTIVE)
                .collect())
        })
        .await
        .map_err(attribute_status)?;
    Ok(ListAttributesResponse {
        attributes: attribute_list(&instances),
    })
}

/// The attributes of `instances`, each with its instance id.
fn attribute_list(instances: &[InstanceRecord]) -> Vec<Attribute> {
    instances
        .iter()
        .flat_map(|i| {
            i.all_attributes()
                .into_iter()
                .map(|(name, value)| Attribute {
                    name,
                    value,
                    instance_id: i.instance_id.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(name: &str, value: &str, instance_id: &str) -> Attribute {
        Attribute {
            name: name.into(),
            value: value.into(),
            instance_id: instance_id.into(),
        }
    }

    #[test]
    fn a_request_names_each_attribute_once_for_its_instance() {
        let r = PutAttributesRequest {
            cluster: String::new(),
            instance_id: "i-1".into(),
            attributes: vec![attribute("zone", "a", ""), attribute("rack", "3", "i-1")],
        };
        let m = requested(&r, "i-1").expect("valid");
        assert_eq!(m.len(), 2);
        let twice = PutAttributesRequest {
            attributes: vec![attribute("zone", "a", ""), attribute("zone", "b", "")],
            ..r.clone()
        };
        let e = requested(&twice, "i-1").expect_err("twice");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("\"zone\" is named twice"), "{e}");
        let other = PutAttributesRequest {
            attributes: vec![attribute("zone", "a", "i-2")],
            ..r.clone()
        };
        let e = requested(&other, "i-1").expect_err("other instance");
        assert!(e.message().contains("names instance \"i-2\""), "{e}");
        let many = PutAttributesRequest {
            attributes: (0..=MAX_PER_CALL)
                .map(|n| attribute(&format!("a{n}"), "v", ""))
                .collect(),
            ..r
        };
        let e = requested(&many, "i-1").expect_err("too many");
        assert!(
            e.message()
                .contains("11 attributes in one call, at most 10"),
            "{e}"
        );
    }

    #[test]
    fn refusals_map_to_statuses_a_client_can_act_on() {
        let code = |e| attribute_status(e).code();
        assert_eq!(
            code(StoreError::InvalidAttribute(
                berth_proto::attributes::AttributeError::Name("a b".into())
            )),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(StoreError::NoAttributesInCall),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(StoreError::NoAttribute {
                instance_id: "i-1".into(),
                name: "zone".into()
            }),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(StoreError::TooManyAttributes {
                instance_id: "i-1".into(),
                count: 65
            }),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(StoreError::InstanceInactive("i-1".into())),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(StoreError::NoInstance("i-1".into())),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(StoreError::NoCluster("x".into())),
            tonic::Code::NotFound
        );
    }

    /// End to end, without the network: what an agent publishes for its
    /// config passes the control plane's Hello checks, and placement reads
    /// the platform and policy names the agent sends.
    #[test]
    fn what_an_agent_publishes_passes_the_hello_checks_and_placement_reads_it() {
        use berth_agent::policy::Policy;
        use berth_proto::v1::agent_message::Msg;
        use berth_proto::v1::{AgentMessage, Hello};

        use crate::server::placement::requirements;
        use crate::server::protocol;

        let policy = Policy {
            allow_privileged: true,
            // Longer than a Hello value may be: cut by the agent.
            allowed_host_paths: (0..400)
                .map(|n| std::path::PathBuf::from(format!("/srv/data-{n:04}")))
                .collect(),
            ..Policy::default()
        };
        let custom: BTreeMap<String, String> = (0..47)
            .map(|n| (format!("custom-{n}"), "v".repeat(128)))
            .collect();
        berth_agent::attributes::check_config(&custom).expect("the most the config allows");
        let attributes = berth_agent::attributes::host_attributes(&policy, "web-1", &custom);
        let hello = AgentMessage {
            msg: Some(Msg::Hello(Hello {
                instance_id: "i-1".into(),
                hostname: "web-1".into(),
                attributes: attributes.clone().into_iter().collect(),
                ..Hello::default()
            })),
        };
        let accepted = protocol::first_message(&hello, "i-1");
        assert!(accepted.is_ok(), "{:?}", accepted.err());

        let instance = InstanceRecord {
            attributes,
            ..InstanceRecord::default()
        };
        let all = instance.all_attributes();
        let arch = if std::env::consts::ARCH == "aarch64" {
            "ARM64"
        } else {
            "X86_64"
        };
        let def = berth_taskdef::parse(&format!(
            r#"{{"family": "root", "runtimePlatform": {{"cpuArchitecture": "{arch}", "operatingSystemFamily": "LINUX"}},
                "containerDefinitions": [{{"name": "root", "image": "busybox", "memory": 64,
                  "privileged": true}}]}}"#
        ))
        .expect("definition");
        let needs = requirements::requirements(&def.definition);
        assert_eq!(needs.len(), 3, "{needs:?}");
        for need in &needs {
            assert!(need.met_by(&all), "{need} not met by {all:?}");
        }
    }

    #[test]
    fn the_list_holds_every_attribute_by_instance() {
        let i = |id: &str, zone: &str| InstanceRecord {
            instance_id: id.into(),
            os: "linux".into(),
            attributes: [("zone".to_owned(), "agent".to_owned())].into(),
            custom_attributes: [("zone".to_owned(), zone.to_owned())].into(),
            ..InstanceRecord::default()
        };
        let list = attribute_list(&[i("i-1", "a"), i("i-2", "b")]);
        let shown: Vec<(&str, &str, &str)> = list
            .iter()
            .map(|a| (a.instance_id.as_str(), a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("i-1", "ecs.os-type", "linux"),
                ("i-1", "zone", "a"),
                ("i-2", "ecs.os-type", "linux"),
                ("i-2", "zone", "b"),
            ]
        );
    }
}
