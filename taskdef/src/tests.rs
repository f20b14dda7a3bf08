//! Examples from the ECS documentation, and how problems are reported.

use crate::*;

/// The WordPress + MySQL example of the ECS developer guide: links and a
/// fixed host port in bridge mode.
const WORDPRESS: &str = r#"{
  "containerDefinitions": [
    {
      "name": "wordpress",
      "links": ["mysql"],
      "image": "wordpress",
      "essential": true,
      "portMappings": [{ "containerPort": 80, "hostPort": 80 }],
      "memory": 500,
      "cpu": 10
    },
    {
      "environment": [{ "name": "MYSQL_ROOT_PASSWORD", "value": "password" }],
      "name": "mysql",
      "image": "mysql",
      "cpu": 10,
      "memory": 500,
      "essential": true
    }
  ],
  "family": "hello_world"
}"#;

/// Container dependencies and health checks, after the ECS guide's
/// "container dependency" example.
const DEPENDS_ON: &str = r#"{
  "family": "app-with-dependencies",
  "networkMode": "bridge",
  "cpu": "1 vCPU",
  "memory": "2 GB",
  "containerDefinitions": [
    {
      "name": "migrate",
      "image": "example/app:1.4",
      "essential": false,
      "command": ["./manage", "migrate"],
      "dependsOn": [{ "containerName": "db", "condition": "HEALTHY" }]
    },
    {
      "name": "db",
      "image": "postgres:16",
      "essential": true,
      "memoryReservation": 512,
      "environment": [{ "name": "POSTGRES_PASSWORD", "value": "example" }],
      "healthCheck": {
        "command": ["CMD-SHELL", "pg_isready -U postgres || exit 1"],
        "interval": 10,
        "timeout": 5,
        "retries": 5,
        "startPeriod": 30
      },
      "mountPoints": [{ "sourceVolume": "pgdata", "containerPath": "/var/lib/postgresql/data" }]
    },
    {
      "name": "app",
      "image": "example/app:1.4",
      "essential": true,
      "cpu": 512,
      "portMappings": [{ "containerPort": 8080, "hostPort": 0, "protocol": "tcp" }],
      "dependsOn": [
        { "containerName": "migrate", "condition": "SUCCESS" },
        { "containerName": "db", "condition": "HEALTHY" }
      ],
      "healthCheck": { "command": ["CMD", "/app/healthcheck"] },
      "restartPolicy": { "enabled": true, "ignoredExitCodes": [0], "restartAttemptPeriod": 60 },
      "startTimeout": 120,
      "stopTimeout": 30,
      "ulimits": [{ "name": "nofile", "softLimit": 65536, "hardLimit": 65536 }],
      "logConfiguration": { "logDriver": "json-file", "options": { "max-size": "10m" } }
    }
  ],
  "volumes": [
    { "name": "pgdata", "dockerVolumeConfiguration": { "scope": "shared", "autoprovision": true, "driver": "local" } }
  ]
}"#;

/// `aws ecs describe-task-definition` output.
const DESCRIBED: &str = r#"{
  "taskDefinition": {
    "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/nginx:3",
    "containerDefinitions": [
      {
        "name": "nginx",
        "image": "public.ecr.aws/nginx/nginx:1.27",
        "cpu": 0,
        "memoryReservation": 128,
        "portMappings": [{ "containerPort": 80, "hostPort": 8080, "protocol": "tcp" }],
        "essential": true,
        "environment": [],
        "mountPoints": [],
        "volumesFrom": [],
        "systemControls": []
      }
    ],
    "family": "nginx",
    "taskRoleArn": "arn:aws:iam::123456789012:role/nginx-task",
    "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
    "networkMode": "bridge",
    "revision": 3,
    "volumes": [],
    "status": "ACTIVE",
    "requiresAttributes": [{ "name": "com.amazonaws.ecs.capability.task-iam-role" }],
    "placementConstraints": [],
    "compatibilities": ["EXTERNAL", "EC2"],
    "requiresCompatibilities": ["EXTERNAL"],
    "runtimePlatform": { "cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX" },
    "registeredAt": "2024-05-01T10:00:00.000000+00:00",
    "registeredBy": "arn:aws:iam::123456789012:user/admin"
  },
  "tags": [{ "key": "team", "value": "web" }]
}"#;

fn problems(json: &str) -> Vec<Problem> {
    match parse(json) {
        Ok(p) => panic!("expected a refusal, got {:?}", p.definition),
        Err(e) => e.problems,
    }
}

fn has(problems: &[Problem], path: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|p| p.path == path && p.message.contains(needle))
}

#[test]
fn wordpress_example_parses() {
    let p = parse(WORDPRESS).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let d = &p.definition;
    assert_eq!(d.family, "hello_world");
    assert_eq!(d.network_mode(), NetworkMode::Bridge);
    assert_eq!(d.container_definitions.len(), 2);
    let wp = d
        .container("wordpress")
        .unwrap_or_else(|| panic!("no wordpress"));
    assert_eq!(wp.links, vec!["mysql".to_owned()]);
    assert_eq!(wp.port_mappings[0].host_port, Some(80));
    assert!(wp.is_essential());
    assert_eq!(
        d.reservation(),
        Reservation {
            cpu: 20,
            memory_mib: 1000
        }
    );
    assert!(d.container("nope").is_none());
}

#[test]
fn depends_on_example_parses() {
    let p = parse(DEPENDS_ON).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let d = &p.definition;
    assert_eq!(d.task_cpu_units(), Some(1024));
    assert_eq!(d.task_memory_mib(), Some(2048));
    assert_eq!(
        d.reservation(),
        Reservation {
            cpu: 1024,
            memory_mib: 2048
        }
    );
    let app = d.container("app").unwrap_or_else(|| panic!("no app"));
    assert_eq!(app.depends_on.len(), 2);
    assert_eq!(app.stop_timeout(), Some(std::time::Duration::from_secs(30)));
    assert!(!d.container("migrate").is_some_and(|c| c.is_essential()));
}

#[test]
fn describe_output_parses_with_role_warnings() {
    let p = parse(DESCRIBED).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.definition.family, "nginx");
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings[0].starts_with("taskDefinition.taskRoleArn: ignored"));
    assert!(p.warnings[1].starts_with("taskDefinition.executionRoleArn: ignored"));
    assert_eq!(
        p.definition.reservation(),
        Reservation {
            cpu: 0,
            memory_mib: 128
        }
    );
}

#[test]
fn validate_agrees_with_parse() {
    for json in [WORDPRESS, DEPENDS_ON, DESCRIBED] {
        let p = parse(json).unwrap_or_else(|e| panic!("{e}"));
        let w = validate(&p.definition).unwrap_or_else(|e| panic!("{e}"));
        // Same warnings, without the describe shape's prefix.
        let unprefixed: Vec<String> = p
            .warnings
            .iter()
            .map(|s| s.trim_start_matches("taskDefinition.").to_owned())
            .collect();
        assert_eq!(w, unprefixed);
    }
}

#[test]
fn placement_constraints_warn() {
    let json = r#"{"family":"f","placementConstraints":[{"type":"memberOf","expression":"attribute:x == y"}],
        "containerDefinitions":[{"name":"a","image":"busybox","memory":64}]}"#;
    let p = parse(json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].starts_with("placementConstraints: ignored"));
}

#[test]
fn display_lists_every_problem() {
    let e = parse(
        r#"{"family":"bad family!","containerDefinitions":[{"name":"a","image":"","memory":64}]}"#,
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    let text = e.to_string();
    assert_eq!(
        text,
        "invalid task definition:\n  family: must be 1 to 255 letters, digits, hyphens or underscores, got \"bad family!\"\n  containerDefinitions[0].image: must not be empty"
    );
}

#[test]
fn unknown_fields_name_their_path_and_suggest() {
    let p = problems(
        r#"{"family":"f","containerDefinitions":[{"name":"a","imagee":"busybox","memory":64}]}"#,
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].path, "containerDefinitions[0].imagee");
    assert!(
        p[0].message.contains("did you mean `image`"),
        "{}",
        p[0].message
    );

    let p = problems(r#"{"family":"f","ContainerDefinitions":[]}"#);
    assert!(
        has(&p, "ContainerDefinitions", "`containerDefinitions`"),
        "{p:?}"
    );

    let p = problems(
        r#"{"taskDefinition":{"family":"f","containerDefinitions":[{"name":"a","image":"b","memory":64,
            "healthCheck":{"command":["CMD","x"],"intervall":5}}]}}"#,
    );
    assert!(
        has(
            &p,
            "taskDefinition.containerDefinitions[0].healthCheck.intervall",
            "`interval`"
        ),
        "{p:?}"
    );
}

#[test]
fn type_errors_in_several_containers_are_all_reported() {
    let p = problems(
        r#"{"family":"f","containerDefinitions":[
            {"name":"a","image":"b","memory":"lots"},
            {"name":"c","image":"d","memory":64,"portMappings":[{"containerPort":70000}]},
            {"name":"e","image":"f","memory":64,"essential":"yes"}]}"#,
    );
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(has(
        &p,
        "containerDefinitions[0].memory",
        "expected a non-negative integer"
    ));
    assert!(has(
        &p,
        "containerDefinitions[1].portMappings[0].containerPort",
        "an integer from 0 to 65535"
    ));
    assert!(has(
        &p,
        "containerDefinitions[2].essential",
        "expected a boolean"
    ));
}

#[test]
fn missing_required_fields_name_the_field() {
    // A required field that is null is missing too.
    let p = problems(r#"{"containerDefinitions":[{"name":"a","image":null,"memory":64}]}"#);
    assert!(has(&p, "family", "required field is missing"), "{p:?}");
    assert!(
        has(
            &p,
            "containerDefinitions[0].image",
            "required field is missing"
        ),
        "{p:?}"
    );
}

#[test]
fn validation_collects_all_problems() {
    let p = problems(
        r#"{"family":"f","networkMode":"awsvpc","containerDefinitions":[
            {"name":"a","image":"b","essential":false,"memory":2,"secrets":[{"name":"X","valueFrom":"arn:x"}]},
            {"name":"a","image":"c d","essential":false}]}"#,
    );
    assert!(has(&p, "networkMode", "awsvpc"));
    assert!(has(&p, "containerDefinitions", "essential"));
    assert!(has(&p, "containerDefinitions[0].memory", "at least 6 MiB"));
    assert!(has(
        &p,
        "containerDefinitions[0].secrets[0].valueFrom",
        "is not an ARN"
    ));
    assert!(has(&p, "containerDefinitions[1].name", "duplicate"));
    assert!(has(&p, "containerDefinitions[1].image", "whitespace"));
    assert!(has(&p, "containerDefinitions[1].memory", "required"));
}

#[test]
fn cycles_are_named() {
    let p = problems(
        r#"{"family":"f","containerDefinitions":[
            {"name":"a","image":"i","memory":64,"dependsOn":[{"containerName":"b","condition":"START"}]},
            {"name":"b","image":"i","memory":64,"links":["c:cee"]},
            {"name":"c","image":"i","memory":64,"volumesFrom":[{"sourceContainer":"a"}]}]}"#,
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].path, "containerDefinitions[2].volumesFrom[0]");
    assert!(
        p[0].message.contains("a -> b -> c -> a"),
        "{}",
        p[0].message
    );
}

#[test]
fn empty_refused_fields_are_accepted() {
    let json = r#"{"family":"f","proxyConfiguration":null,"inferenceAccelerators":[],
        "containerDefinitions":[{"name":"a","image":"b","memory":64,"secrets":[],"environmentFiles":[],
        "resourceRequirements":null}]}"#;
    let p = parse(json).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.warnings.is_empty());
}

#[test]
fn root_problems() {
    let big = format!("{{\"family\":\"{}\"}}", "a".repeat(MAX_DEFINITION_BYTES));
    assert_eq!(problems(&big)[0].path, "$");
    assert_eq!(problems("[]")[0].path, "$");
    assert_eq!(problems("{")[0].path, "$");
    assert!(problems("")[0].message.starts_with("not valid JSON"));
    let p = problems(r#"{"taskDefinition": 3}"#);
    assert_eq!(p[0].path, "taskDefinition");
    let p = problems(r#"{"taskDefinition": {}, "extra": 1}"#);
    assert_eq!(p[0].path, "extra");
}

#[test]
fn duplicate_keys_are_refused() {
    let p = problems(
        r#"{"family":"f","containerDefinitions":[{"name":"a","image":"b","image":"c","memory":64}]}"#,
    );
    assert_eq!(p[0].path, "containerDefinitions[0].image");
    assert!(p[0].message.contains("duplicate key"));
}

#[test]
fn host_mode_ports() {
    let ok = r#"{"family":"f","networkMode":"host","containerDefinitions":[
        {"name":"a","image":"b","memory":64,"portMappings":[{"containerPort":80},{"containerPort":81,"hostPort":81}]}]}"#;
    let p = parse(ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.definition.network_mode(), NetworkMode::Host);
    let p = problems(
        r#"{"family":"f","networkMode":"host","containerDefinitions":[
        {"name":"a","image":"b","memory":64,"portMappings":[{"containerPort":80}]},
        {"name":"c","image":"b","memory":64,"portMappings":[{"containerPort":80}]}]}"#,
    );
    assert!(has(
        &p,
        "containerDefinitions[1].portMappings[0].containerPort",
        "host port 80/tcp is already mapped by containerDefinitions[0].portMappings[0]"
    ));
}

/// A console export: `null` for every field nobody set, lists and maps
/// included.
#[test]
fn nulls_are_absent_everywhere() {
    let json = r#"{"family":"f","taskRoleArn":null,"executionRoleArn":null,"networkMode":null,
        "volumes":null,"placementConstraints":null,"cpu":null,"memory":null,"pidMode":null,
        "ipcMode":null,"proxyConfiguration":null,"runtimePlatform":null,"tags":null,
        "containerDefinitions":[{"name":"a","image":"busybox","memory":64,"cpu":null,
            "links":null,"portMappings":null,"essential":null,"entryPoint":null,"command":null,
            "environment":[{"name":"A","value":null}],"mountPoints":null,"volumesFrom":null,
            "linuxParameters":{"capabilities":null,"devices":null,"tmpfs":null,"maxSwap":null},
            "secrets":null,"dependsOn":null,"dockerLabels":null,"ulimits":null,
            "healthCheck":null,"logConfiguration":{"logDriver":"json-file","options":null},
            "systemControls":null,"resourceRequirements":null,"dnsServers":null,
            "extraHosts":null,"hostname":null,"user":null,"workingDirectory":null}]}"#;
    let p = parse(json).unwrap_or_else(|e| panic!("{e}"));
    let c = &p.definition.container_definitions[0];
    assert!(c.is_essential());
    assert!(c.port_mappings.is_empty() && c.health_check.is_none());
    assert_eq!(c.environment[0].value, "");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn every_problem_of_a_definition_is_reported_in_one_run() {
    let p = problems(
        r#"{"family":"f","famly":"x","containerDefinitions":[
            {"name":"a","image":"b","memory":"lots","essential":"yes","portMappings":[{"containerPort":"80"},"8080"],
             "healthCheck":{"command":"curl","intervall":5}},
            {"name":"c","Image":"d","memory":2,"dependsOn":[{"containerName":"zz"}]}]}"#,
    );
    let want = [
        ("famly", "did you mean `family`"),
        (
            "containerDefinitions[0].memory",
            "expected a non-negative integer",
        ),
        ("containerDefinitions[0].essential", "expected a boolean"),
        (
            "containerDefinitions[0].portMappings[0].containerPort",
            "an integer from 0 to 65535",
        ),
        (
            "containerDefinitions[0].portMappings[1]",
            "expected an object",
        ),
        (
            "containerDefinitions[0].healthCheck.command",
            "expected an array",
        ),
        (
            "containerDefinitions[0].healthCheck.intervall",
            "did you mean `interval`",
        ),
        ("containerDefinitions[1].Image", "case-sensitive"),
        (
            "containerDefinitions[1].dependsOn[0].condition",
            "required field is missing",
        ),
        ("containerDefinitions[1].memory", "at least 6 MiB"),
        (
            "containerDefinitions[1].dependsOn[0].containerName",
            "no container named",
        ),
    ];
    for (path, needle) in want {
        assert!(has(&p, path, needle), "no {path}: {needle} in {p:#?}");
    }
    assert_eq!(p.len(), want.len(), "{p:#?}");
}

#[test]
fn many_problems_are_capped_and_counted() {
    let envs: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"name":"","value":"{i}"}}"#))
        .collect();
    let json = format!(
        r#"{{"family":"f","containerDefinitions":[{{"name":"a","image":"b","memory":64,"environment":[{}]}}]}}"#,
        envs.join(",")
    );
    let e = parse(&json).err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(e.problems.len(), MAX_PROBLEMS);
    assert_eq!(e.omitted, 30 - MAX_PROBLEMS);
    assert!(
        e.to_string()
            .ends_with("… and 10 more (fix these and try again)"),
        "{e}"
    );
}

#[test]
fn hostile_input_stays_bounded() {
    // Thousands of type errors: checking stops, says so, and lists 20.
    let items: Vec<&str> = vec!["1"; 5000];
    let json = format!(
        r#"{{"family":"f","containerDefinitions":[{{"name":"a","image":"b","memory":64,"command":[{}]}}]}}"#,
        items.join(",")
    );
    let e = parse(&json).err().unwrap_or_else(|| panic!("accepted"));
    assert!(e.incomplete);
    assert_eq!(e.problems.len(), MAX_PROBLEMS);
}

#[test]
fn aws_services_warn_once() {
    let json = r#"{"family":"f","containerDefinitions":[
        {"name":"a","image":"123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1","memory":64,
         "logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"g"}}},
        {"name":"b","image":"123456789012.dkr.ecr.us-east-1.amazonaws.com/side:1","memory":64,
         "logConfiguration":{"logDriver":"awslogs"}},
        {"name":"c","image":"public.ecr.aws/nginx/nginx:1","memory":64}]}"#;
    let p = parse(json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(
        p.warnings[0].starts_with("containerDefinitions[0].logConfiguration.logDriver: awslogs")
    );
    assert!(p.warnings[0].ends_with("; also containerDefinitions[1].logConfiguration.logDriver"));
    assert!(p.warnings[1].starts_with("containerDefinitions[0].image:"));
    assert!(
        p.warnings[1].contains("repositoryCredentials") && p.warnings[1].contains("Docker config")
    );
}

#[test]
fn ecr_registries_are_recognised() {
    use crate::validate::is_ecr_registry;
    assert!(is_ecr_registry(
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    ));
    assert!(is_ecr_registry(
        "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"
    ));
    assert!(is_ecr_registry(
        "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
    ));
    assert!(!is_ecr_registry("public.ecr.aws"));
    assert!(!is_ecr_registry("registry.example.com"));
    assert!(!is_ecr_registry("12345.dkr.ecr.eu-west-1.amazonaws.com"));
}
