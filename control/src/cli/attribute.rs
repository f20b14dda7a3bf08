//! `berth attribute put|delete|ls`.
//!
//! The arguments are checked here, with the rules the control plane
//! applies ([`berth_proto::attributes`]), before anything is sent: a bad
//! `NAME=VALUE` is an error naming it (exit 1), and nothing of the call is
//! stored.

use std::collections::BTreeSet;

use anyhow::bail;
use berth_proto::attributes::{MAX_PER_CALL, check_custom, check_custom_name};
use berth_proto::json::{attribute_json, instance_json};
use berth_proto::text::{escape_control, shown};
use berth_proto::v1::{
    Attribute, DeleteAttributesRequest, Instance, ListAttributesRequest, PutAttributesRequest,
};
use serde_json::Value;

use super::args::AttributeCommand;
use super::client::Admin;
use super::print_json;
use crate::view::Table;

/// An attribute command whose arguments passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Call {
    Put(PutAttributesRequest, bool),
    Delete(DeleteAttributesRequest, bool),
    Ls(ListAttributesRequest, bool),
}

/// `NAME=VALUE` as a valid custom attribute.
fn parse_pair(arg: &str) -> anyhow::Result<Attribute> {
    let Some((name, value)) = arg.split_once('=') else {
        bail!(
            "attribute {}: expected NAME=VALUE, e.g. zone=rack-3",
            shown(arg)
        );
    };
    check_custom(name, value)?;
    Ok(Attribute {
        name: name.to_owned(),
        value: value.to_owned(),
        instance_id: String::new(),
    })
}

/// At most [`MAX_PER_CALL`] names, each once.
fn check_names<'a>(names: impl Iterator<Item = &'a str>) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            bail!("attribute {name} is named twice");
        }
    }
    if seen.len() > MAX_PER_CALL {
        bail!(
            "{} attributes, at most {MAX_PER_CALL} are allowed in one call",
            seen.len()
        );
    }
    Ok(())
}

/// The call of a command line, or an error naming the bad argument.
pub(super) fn checked(cmd: AttributeCommand) -> anyhow::Result<Call> {
    Ok(match cmd {
        AttributeCommand::Put {
            instance,
            attributes,
            cluster,
            json,
        } => {
            let attributes = attributes
                .iter()
                .map(|a| parse_pair(a))
                .collect::<anyhow::Result<Vec<_>>>()?;
            check_names(attributes.iter().map(|a| a.name.as_str()))?;
            Call::Put(
                PutAttributesRequest {
                    cluster: cluster.cluster,
                    instance_id: instance,
                    attributes,
                },
                json,
            )
        }
        AttributeCommand::Delete {
            instance,
            names,
            cluster,
            json,
        } => {
            for name in &names {
                check_custom_name(name)?;
            }
            check_names(names.iter().map(String::as_str))?;
            Call::Delete(
                DeleteAttributesRequest {
                    cluster: cluster.cluster,
                    instance_id: instance,
                    names,
                },
                json,
            )
        }
        AttributeCommand::Ls {
            instance,
            cluster,
            json,
        } => Call::Ls(
            ListAttributesRequest {
                cluster: cluster.cluster,
                instance_id: instance.unwrap_or_default(),
            },
            json,
        ),
    })
}

pub(super) async fn attribute(admin: &mut Admin, call: Call) -> anyhow::Result<()> {
    match call {
        Call::Put(r, json) => {
            let names: Vec<String> = r.attributes.iter().map(|a| a.name.clone()).collect();
            let i = admin.client.put_attributes(r).await;
            let i = i.map_err(|s| admin.status(s))?.into_inner();
            changed(&i, &names, "put", json)
        }
        Call::Delete(r, json) => {
            let names = r.names.clone();
            let i = admin.client.delete_attributes(r).await;
            let i = i.map_err(|s| admin.status(s))?.into_inner();
            changed(&i, &names, "deleted", json)
        }
        Call::Ls(r, json) => {
            let list = admin.client.list_attributes(r).await;
            let list = list.map_err(|s| admin.status(s))?.into_inner().attributes;
            if json {
                print_json(&Value::Array(list.iter().map(attribute_json).collect()))
            } else {
                print!("{}", attributes_table(&list));
                Ok(())
            }
        }
    }
}

/// What a put or delete returned: the instance as JSON, or one line.
fn changed(i: &Instance, names: &[String], what: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&instance_json(i));
    }
    println!(
        "instance {}: attribute{} {} {what}",
        escape_control(&i.instance_id),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    Ok(())
}

fn attributes_table(list: &[Attribute]) -> String {
    let mut t = Table::new(&["INSTANCE", "NAME", "VALUE"]);
    for a in list {
        t.row(vec![a.instance_id.clone(), a.name.clone(), a.value.clone()]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::ClusterArg;

    fn put(args: &[&str]) -> anyhow::Result<Call> {
        checked(AttributeCommand::Put {
            instance: "i-1".into(),
            attributes: args.iter().map(|a| (*a).to_owned()).collect(),
            cluster: ClusterArg {
                cluster: "default".into(),
            },
            json: false,
        })
    }

    #[test]
    fn bad_pairs_are_named_before_anything_is_sent() {
        let Call::Put(r, _) = put(&["zone=rack-3", "path=a/b:c"]).expect("valid") else {
            panic!("not a put");
        };
        assert_eq!(
            (
                r.attributes[1].name.as_str(),
                r.attributes[1].value.as_str()
            ),
            ("path", "a/b:c")
        );
        let cases: &[(&[&str], &str)] = &[
            (&["zone"], "attribute \"zone\": expected NAME=VALUE"),
            (&["zone="], "attribute zone: value \"\""),
            (&["=x"], "attribute name \"\""),
            (&["zone=rack 3"], "attribute zone: value \"rack 3\""),
            (&["zone=a=b"], "attribute zone: value \"a=b\""),
            (
                &["ecs.os-type=windows"],
                "attribute ecs.os-type: names beginning with",
            ),
            (&["zone=a", "zone=b"], "attribute zone is named twice"),
        ];
        for (args, expected) in cases {
            let e = put(args).expect_err("refused").to_string();
            assert!(e.contains(expected), "{args:?}: {e}");
        }
        let long = format!("zone={}", "v".repeat(129));
        assert!(put(&[&long]).is_err());
        let eleven: Vec<String> = (0..11).map(|n| format!("a{n}=v")).collect();
        let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
        let e = put(&eleven).expect_err("too many").to_string();
        assert!(e.contains("11 attributes, at most 10"), "{e}");
    }

    #[test]
    fn the_table_escapes_what_it_shows() {
        let t = attributes_table(&[Attribute {
            name: "zone".into(),
            value: "a\u{1b}[2J".into(),
            instance_id: "i-1".into(),
        }]);
        assert!(t.contains("i-1       zone  a\\u{1b}[2J"), "{t}");
    }
}
