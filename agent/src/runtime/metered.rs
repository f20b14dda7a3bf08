//! [`MeteredRuntime`]: a [`Runtime`] that times every call of the one it
//! wraps and counts its failures ([`crate::metrics::AgentMetrics`]).
//!
//! The agent wraps whatever runtime it is given (Docker, or the fake in
//! tests) once, in [`crate::start`], so every call of every supervisor is
//! measured without the implementations knowing about metrics. `events` is
//! a stream that lives as long as the agent and is passed through untimed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream;

use super::{
    ContainerInfo, ContainerSpec, PullPolicy, Runtime, RuntimeError, RuntimeEvent, VolumeSpec,
};
use crate::metrics::{AgentMetrics, DockerOp};

pub struct MeteredRuntime {
    inner: Arc<dyn Runtime>,
    metrics: Arc<AgentMetrics>,
}

impl MeteredRuntime {
    pub fn new(inner: Arc<dyn Runtime>, metrics: Arc<AgentMetrics>) -> MeteredRuntime {
        MeteredRuntime { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: DockerOp,
        call: impl std::future::Future<Output = Result<T, RuntimeError>>,
    ) -> (Result<T, RuntimeError>, Duration) {
        let started = Instant::now();
        let result = call.await;
        let took = started.elapsed();
        self.metrics.docker_call(op, took, result.is_err());
        (result, took)
    }
}

#[async_trait::async_trait]
impl Runtime for MeteredRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.timed(DockerOp::Ping, self.inner.ping()).await.0
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        credentials: Option<&crate::secrets::PullCredentials>,
    ) -> Result<(), RuntimeError> {
        let (result, took) = self
            .timed(
                DockerOp::EnsureImage,
                self.inner.ensure_image(image, policy, credentials),
            )
            .await;
        self.metrics.image_pull_duration.observe_duration(took);
        if result.is_ok() {
            self.metrics.image_pulls_succeeded.inc();
        } else {
            self.metrics.image_pulls_failed.inc();
        }
        result
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.timed(DockerOp::Create, self.inner.create(spec))
            .await
            .0
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.timed(DockerOp::Start, self.inner.start(id)).await.0
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.timed(DockerOp::Stop, self.inner.stop(id, timeout))
            .await
            .0
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.timed(DockerOp::Remove, self.inner.remove(id)).await.0
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        self.timed(DockerOp::Inspect, self.inner.inspect(id))
            .await
            .0
    }

    fn events(&self, instance_id: &str) -> BoxStream<'static, RuntimeEvent> {
        self.inner.events(instance_id)
    }

    async fn ensure_volume(&self, spec: &VolumeSpec) -> Result<(), RuntimeError> {
        self.timed(DockerOp::EnsureVolume, self.inner.ensure_volume(spec))
            .await
            .0
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.timed(DockerOp::RemoveVolume, self.inner.remove_volume(name))
            .await
            .0
    }

    async fn engine_cgroups(&self) -> Result<crate::cgroups::EngineCgroups, RuntimeError> {
        self.inner.engine_cgroups().await
    }

    async fn log_drivers(&self) -> Result<Vec<String>, RuntimeError> {
        self.timed(DockerOp::LogDrivers, self.inner.log_drivers())
            .await
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    #[tokio::test]
    async fn every_call_is_timed_and_pulls_are_counted_by_result() {
        let metrics = Arc::new(AgentMetrics::default());
        let fake = Arc::new(FakeRuntime::default());
        let rt = MeteredRuntime::new(fake.clone(), Arc::clone(&metrics));
        rt.ping().await.expect("ping");
        rt.ensure_image("busybox:latest", PullPolicy::Default, None)
            .await
            .expect("image");
        assert!(rt.inspect("missing").await.expect("inspect").is_none());
        fake.fail_pull("bad:1");
        assert!(
            rt.ensure_image("bad:1", PullPolicy::Always, None)
                .await
                .is_err()
        );
        assert!(rt.start("missing").await.is_err());
        assert_eq!(metrics.docker_calls(DockerOp::Ping), 1);
        assert_eq!(metrics.docker_calls(DockerOp::EnsureImage), 2);
        assert_eq!(metrics.docker_calls(DockerOp::Inspect), 1);
        assert_eq!(metrics.docker_calls(DockerOp::Start), 1);
        assert_eq!(metrics.image_pulls_succeeded.get(), 1);
        assert_eq!(metrics.image_pulls_failed.get(), 1);
        assert_eq!(metrics.image_pull_duration.count(), 2);
        let text = metrics.render(&crate::manager::View::default());
        assert!(
            text.lines()
                .any(|l| l
                    == "berth_agent_docker_request_errors_total{operation=\"ensure_image\"} 1"),
            "{text}"
        );
    }
}
