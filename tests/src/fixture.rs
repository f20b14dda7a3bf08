//! The usual setup of a test: one image, one control plane, one agent.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::{
    Agent, Postgres, RunId, Scratch, Server, ServerOptions, TestImage, describe_output,
    stdout_json, str_field, task_def,
};

/// A run id, a test image, a control plane and one agent enrolled, started
/// and connected.
///
/// Fields drop in order: the agent (and its containers) first, then the
/// server, the image, the scratch files. Create a [`crate::Registry`] before
/// the fleet (with [`Fleet::start_with`]) so that it outlives the agent.
pub struct Fleet {
    pub agent: Agent,
    pub server: Server,
    /// The server's store when it runs on PostgreSQL
    /// ([`Fleet::start_on_postgres`]); dropped after the server.
    pub postgres: Option<Postgres>,
    pub image: TestImage,
    pub files: Scratch,
    pub run: RunId,
}

impl Fleet {
    pub fn start() -> Fleet {
        Fleet::start_with(RunId::new())
    }

    pub fn start_with(run: RunId) -> Fleet {
        Fleet::start_custom(run, |server, agent| agent.start_connected(server))
    }

    /// A fleet whose agent, once enrolled, is set up and started by `start`
    /// (its config, data dir, server address or environment changed first);
    /// `start` returns once the agent is connected.
    pub fn start_custom(run: RunId, start: impl FnOnce(&Server, &mut Agent)) -> Fleet {
        Fleet::start_on(run, None, start)
    }

    /// [`Fleet::start`] with the server's store on a throwaway PostgreSQL
    /// server (`berth server --store postgres://…`), one database per fleet.
    pub fn start_on_postgres() -> Fleet {
        let run = RunId::new();
        let postgres = Postgres::start(&run);
        Fleet::start_on(run, Some(postgres), |server, agent| {
            agent.start_connected(server)
        })
    }

    fn start_on(
        run: RunId,
        postgres: Option<Postgres>,
        start: impl FnOnce(&Server, &mut Agent),
    ) -> Fleet {
        // BERTH_E2E_STORE=postgres runs every fleet's server on PostgreSQL
        // (scripts/test.sh does so for the service suites).
        let postgres = postgres.or_else(|| {
            (std::env::var("BERTH_E2E_STORE").as_deref() == Ok("postgres"))
                .then(|| Postgres::start(&run))
        });
        let files = Scratch::new(&run);
        let image = TestImage::build(&run);
        let options = ServerOptions {
            store: postgres.as_ref().map(|p| p.create_database("berth")),
            ..ServerOptions::default()
        };
        let server = Server::start_with(&run, &options);
        let mut agent = Agent::enroll(&server, &run);
        start(&server, &mut agent);
        Fleet {
            agent,
            server,
            postgres,
            image,
            files,
            run,
        }
    }

    /// `<name>-<runid>`: a task family unique to this run, so container
    /// names (`berth-<family>-…`) show which test made them.
    pub fn family(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }

    /// Writes a task definition of `family` with `containers` (the test
    /// image filled in, see [`task_def`]) to the scratch directory.
    pub fn task_def_file(&self, family: &str, containers: Value) -> PathBuf {
        self.files.write(
            &format!("{family}.json"),
            &task_def(self.image.tag(), family, containers),
        )
    }

    /// `berth task run --task-definition FILE --instance <agent> EXTRA…`.
    pub fn run_task(&self, file: &std::path::Path, extra: &[&str]) -> Output {
        let file = file.to_string_lossy();
        let mut args = vec![
            "task",
            "run",
            "--task-definition",
            &file,
            "--instance",
            self.agent.instance_id(),
        ];
        args.extend_from_slice(extra);
        self.server.cli(&args)
    }

    /// `berth task run … --wait --json`; asserts exit 0 and returns the task.
    pub fn run_task_wait(&self, file: &std::path::Path) -> Value {
        let out = self.run_task(file, &["--wait", "--json"]);
        assert!(
            out.status.success(),
            "`berth task run --task-definition {} --wait --json` failed\n{}\nagent log tail:\n{}",
            file.display(),
            describe_output(&out),
            self.agent.log_tail()
        );
        let task = stdout_json("berth task run --wait --json", &out);
        assert!(
            !str_field(&task, "taskId").is_empty(),
            "`berth task run --json` printed no taskId: {task}"
        );
        task
    }
}
