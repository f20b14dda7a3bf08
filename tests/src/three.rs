//! A fleet of three real agents on one control plane, for the service
//! tests (`tests/services.rs`, `tests/placement.rs`), and a watcher that
//! samples a service's tasks while a deployment runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::{
    Agent, Cli, DEADLINE, Fleet, LONG_RUNNING, RunId, describe_output, list_of, said, str_field,
    wait_for,
};

/// `--wait-timeout` of the commands that wait: the harness' deadline.
const WAIT_TIMEOUT: &str = "2m";

/// Between two samples of [`Three::watch`].
const SAMPLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// A fleet of three agents on one control plane (more with
/// [`Three::add_agent`]). The extra agents drop (and take their containers
/// with them) before the fleet.
pub struct Three {
    pub more: Vec<Agent>,
    pub fleet: Fleet,
}

impl Three {
    pub fn start() -> Three {
        Three::start_with(RunId::new())
    }

    /// [`Three::start`] with the run id of things made before the fleet
    /// (a [`crate::Registry`] that must outlive the agents).
    pub fn start_with(run: RunId) -> Three {
        let fleet = Fleet::start_with(run);
        let mut three = Three {
            more: Vec::new(),
            fleet,
        };
        for _ in 0..2 {
            three.add_agent();
        }
        three
    }

    /// Enrolls, starts and waits for one more agent; returns its instance id.
    pub fn add_agent(&mut self) -> String {
        let mut a = Agent::enroll(&self.fleet.server, &self.fleet.run);
        a.start_connected(&self.fleet.server);
        let id = a.instance_id().to_owned();
        self.more.push(a);
        id
    }

    /// Every agent's instance id, the fleet's own first.
    pub fn instance_ids(&self) -> Vec<String> {
        std::iter::once(&self.fleet.agent)
            .chain(&self.more)
            .map(|a| a.instance_id().to_owned())
            .collect()
    }

    pub fn agent(&mut self, instance_id: &str) -> &mut Agent {
        if self.fleet.agent.instance_id() == instance_id {
            return &mut self.fleet.agent;
        }
        self.more
            .iter_mut()
            .find(|a| a.instance_id() == instance_id)
            .unwrap_or_else(|| panic!("no agent of instance {instance_id}"))
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.fleet.server.cli(args)
    }

    /// `berth ARGS…`, which must exit 0.
    pub fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`berth {}` failed\n{}",
            args.join(" "),
            describe_output(&out)
        );
        out
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.fleet.server.cli_json(args)
    }

    /// A long-running task definition of a family unique to this run, with
    /// `env` as its environment (a new revision when it changes).
    pub fn definition(&self, name: &str, env: &str) -> String {
        self.definition_of(
            name,
            json!([{"name": "app", "essential": true, "command": LONG_RUNNING,
                    "environment": [{"name": "VERSION", "value": env}]}]),
        )
    }

    /// A task definition of the run's family `name` with `containers` (the
    /// test image and 64 MiB filled in where absent).
    pub fn definition_of(&self, name: &str, containers: Value) -> String {
        let family = self.fleet.family(name);
        let file = self.fleet.task_def_file(&family, containers);
        file.to_string_lossy().into_owned()
    }

    pub fn describe(&self, service: &str) -> Value {
        self.json(&["service", "describe", service, "--json"])
    }

    /// The messages of the service's events, newest first.
    pub fn events(&self, service: &str) -> Vec<String> {
        let all = self.json(&["service", "events", service, "--json"]);
        list_of(&all, "events")
            .iter()
            .map(|e| str_field(e, "message").to_owned())
            .collect()
    }

    /// The tasks of the service, any status.
    pub fn tasks(&self, service: &str) -> Vec<Value> {
        tasks_of(&self.json(&["task", "ls", "--json"]), service)
    }

    /// Its tasks RUNNING and desired RUNNING.
    pub fn running(&self, service: &str) -> Vec<Value> {
        self.tasks(service).into_iter().filter(serving).collect()
    }

    pub fn wait_service(&self, service: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("service {service}: {what}"), DEADLINE, || {
            let d = self.describe(service);
            if done(&d) {
                Ok(d)
            } else {
                Err(format!("service: {d}"))
            }
        })
    }

    /// Waits until one of the service's events satisfies `matches`; returns
    /// the message.
    pub fn wait_event(&self, service: &str, what: &str, matches: impl Fn(&str) -> bool) -> String {
        wait_for(
            &format!("service {service}: event {what}"),
            DEADLINE,
            || {
                let events = self.events(service);
                match events.iter().find(|m| matches(m)) {
                    Some(m) => Ok(m.clone()),
                    None => Err(format!("events: {events:?}")),
                }
            },
        )
    }

    /// `service create … --min-healthy-time 1s --wait --wait-timeout 2m
    /// --json`, which must succeed.
    pub fn create(&self, args: &[&str]) -> Value {
        let mut all = vec!["service", "create"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--min-healthy-time",
            "1s",
            "--wait",
            "--wait-timeout",
            WAIT_TIMEOUT,
            "--json",
        ]);
        let out = self.ok(&all);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", said(&out)))
    }

    /// `service update NAME ARGS… --wait --wait-timeout 2m`, which must
    /// succeed.
    pub fn update(&self, service: &str, args: &[&str]) {
        let mut all = vec!["service", "update", service];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--wait", "--wait-timeout", WAIT_TIMEOUT]);
        self.ok(&all);
    }

    /// Waits until exactly `n` tasks of the service are alive, every one of
    /// them RUNNING and desired RUNNING; returns them. (`service update
    /// --desired-count N --wait` does not wait for the count: the deployment
    /// stays COMPLETED.)
    pub fn wait_settled(&self, service: &str, n: usize) -> Vec<Value> {
        wait_for(
            &format!("service {service}: {n} tasks running, no other"),
            DEADLINE,
            || {
                let tasks = self.tasks(service);
                let alive: Vec<Value> = tasks.iter().filter(|t| alive(t)).cloned().collect();
                if alive.len() == n && alive.iter().all(serving) {
                    Ok(alive)
                } else {
                    Err(format!("{:?}", summary(&tasks)))
                }
            },
        )
    }

    /// Runs `during` while a thread samples the service's tasks (`berth task
    /// ls --json`) every 50 ms or so; returns what `during` returned and every
    /// sample (at least one taken after `during` returned).
    pub fn watch<R>(&self, service: &str, during: impl FnOnce() -> R) -> (R, Vec<Vec<Value>>) {
        let cli = Cli::new(self.fleet.server.admin_addr());
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut samples = Vec::new();
                loop {
                    let last = done.load(Ordering::SeqCst);
                    samples.push(tasks_of(&cli.json(&["task", "ls", "--json"]), service));
                    if last {
                        return samples;
                    }
                    // Pacing, not synchronisation: leaves the CPU to the
                    // fleet on a small machine.
                    std::thread::sleep(SAMPLE_PAUSE);
                }
            });
            let r = during();
            done.store(true, Ordering::SeqCst);
            let samples = sampler
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (r, samples)
        })
    }
}

/// The tasks of `service` in a `task ls --json` answer.
fn tasks_of(all: &Value, service: &str) -> Vec<Value> {
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|t| str_field(t, "group") == format!("service:{service}"))
        .cloned()
        .collect()
}

/// RUNNING and desired RUNNING.
pub fn serving(t: &Value) -> bool {
    str_field(t, "lastStatus") == "RUNNING" && str_field(t, "desiredStatus") == "RUNNING"
}

/// Not STOPPED: counts against the deployment's maximum.
pub fn alive(t: &Value) -> bool {
    str_field(t, "lastStatus") != "STOPPED"
}

pub fn instances_of(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| str_field(t, "instanceId").to_owned())
        .collect()
}

/// How many of `tasks` are on each instance.
pub fn per_instance(tasks: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in tasks {
        *m.entry(str_field(t, "instanceId").to_owned()).or_default() += 1;
    }
    m
}

/// How many of `tasks` are on each instance that has any, smallest first.
pub fn spread_of(tasks: &[Value]) -> Vec<usize> {
    let mut counts: Vec<usize> = per_instance(tasks).into_values().collect();
    counts.sort_unstable();
    counts
}

pub fn task_ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| str_field(t, "taskId").to_owned())
        .collect()
}

pub fn primary(d: &Value) -> Value {
    list_of(d, "deployments")
        .into_iter()
        .find(|x| str_field(x, "status") == "PRIMARY")
        .unwrap_or_else(|| panic!("no PRIMARY deployment: {d}"))
}

/// Asserts that in every sample the service's alive tasks were at most
/// `max` and its serving ones at least `min` (SPEC §6 "Rolling
/// deployment").
pub fn assert_within_bounds(samples: &[Vec<Value>], min: usize, max: usize) {
    assert!(!samples.is_empty());
    eprintln!(
        "{} samples: alive at most {max}, running at least {min}",
        samples.len()
    );
    for (i, s) in samples.iter().enumerate() {
        let alive = s.iter().filter(|t| alive(t)).count();
        let serving = s.iter().filter(|t| serving(t)).count();
        assert!(
            alive <= max,
            "sample {i} of {}: {alive} tasks alive, the maximum is {max}: {:?}",
            samples.len(),
            summary(s)
        );
        assert!(
            serving >= min,
            "sample {i} of {}: {serving} tasks running, the minimum healthy is {min}: {:?}",
            samples.len(),
            summary(s)
        );
    }
}

/// Whether some sample saw an alive task whose `taskDefinitionArn` ends
/// with `revision_suffix` next to an alive one that does not (the samples
/// did watch the deployment).
pub fn saw_side_by_side(samples: &[Vec<Value>], revision_suffix: &str) -> bool {
    samples.iter().any(|s| {
        let of_new = |t: &&Value| str_field(t, "taskDefinitionArn").ends_with(revision_suffix);
        let alive: Vec<&Value> = s.iter().filter(|t| alive(t)).collect();
        alive.iter().any(of_new) && !alive.iter().all(of_new)
    })
}

/// One line per task: id, instance, definition, last/desired status.
pub fn summary(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| {
            format!(
                "{} on {} {} {}/{}",
                str_field(t, "taskId"),
                str_field(t, "instanceId"),
                str_field(t, "taskDefinitionArn"),
                str_field(t, "lastStatus"),
                str_field(t, "desiredStatus")
            )
        })
        .collect()
}
