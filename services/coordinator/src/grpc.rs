//! gRPC handlers: convert, call the [`Coordinator`], convert back. No logic here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_proto::v1::coordinator_service_server::CoordinatorService;
use dbsync_proto::v1::worker_service_server::WorkerService;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::engine::Coordinator;

/// CoordinatorService; `shutdown` ends open status streams so a graceful shutdown completes.
#[derive(Clone)]
pub struct CoordinatorGrpc(
    pub Arc<Coordinator>,
    pub dbsync_telemetry::CancellationToken,
);

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::TaskStatus, Status>> + Send>>;

#[tonic::async_trait]
impl CoordinatorService for CoordinatorGrpc {
    #[tracing::instrument(skip_all)]
    async fn create_task(
        &self,
        req: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        Ok(Response::new(
            self.0.create_task(&req.into_inner().spec).await?,
        ))
    }

    async fn get_task(&self, req: Request<pb::TaskRef>) -> Result<Response<pb::TaskInfo>, Status> {
        Ok(Response::new(self.0.get_task(&req.into_inner().task_id)?))
    }

    async fn list_tasks(
        &self,
        _req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        Ok(Response::new(pb::ListTasksResponse {
            tasks: self.0.list_tasks()?,
        }))
    }

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn precheck_task(
        &self,
        req: Request<pb::PrecheckTaskRequest>,
    ) -> Result<Response<pb::PrecheckReport>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.0.precheck(&r.task_id, &r.acknowledge).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn start_task(
        &self,
        req: Request<pb::TaskRef>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        Ok(Response::new(
            self.0.start(&req.into_inner().task_id).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn pause_task(
        &self,
        req: Request<pb::TaskRef>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        Ok(Response::new(
            self.0.pause(&req.into_inner().task_id).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn resume_task(
        &self,
        req: Request<pb::TaskRef>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        Ok(Response::new(
            self.0.resume(&req.into_inner().task_id).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn modify_task(
        &self,
        req: Request<pb::ModifyTaskRequest>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        Ok(Response::new(self.0.modify(req.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn stop_task(&self, req: Request<pb::TaskRef>) -> Result<Response<pb::TaskInfo>, Status> {
        Ok(Response::new(self.0.stop(&req.into_inner().task_id).await?))
    }

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn delete_task(
        &self,
        req: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let r = req.into_inner();
        self.0.delete(&r.task_id, r.cleanup_source).await?;
        Ok(Response::new(pb::DeleteTaskResponse {}))
    }

    async fn get_task_status(
        &self,
        req: Request<pb::TaskRef>,
    ) -> Result<Response<pb::TaskStatus>, Status> {
        Ok(Response::new(self.0.status(&req.into_inner().task_id)?))
    }

    type WatchTaskStatusStream = StatusStream;

    /// Sends the status now, on every change, and at least once a second (lag moves with time).
    /// Ends when the task is deleted or the client goes away.
    async fn watch_task_status(
        &self,
        req: Request<pb::TaskRef>,
    ) -> Result<Response<StatusStream>, Status> {
        let task = req.into_inner().task_id;
        let coordinator = self.0.clone();
        coordinator.status(&task)?;
        let changes = coordinator.subscribe();
        let shutdown = self.1.clone();
        let state = (coordinator, task, changes, shutdown, true);
        let stream = futures::stream::unfold(
            state,
            |(c, task, mut changes, shutdown, first)| async move {
                if !first {
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()) => {}
                    }
                    changes.borrow_and_update();
                }
                if shutdown.is_cancelled() {
                    return None;
                }
                let status = c.status(&task).ok()?;
                Some((Ok(status), (c, task, changes, shutdown, false)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn verify_task(
        &self,
        req: Request<pb::VerifyTaskRequest>,
    ) -> Result<Response<pb::VerifyReport>, Status> {
        Ok(Response::new(self.0.verify(req.into_inner()).await?))
    }

    type VerifyTaskStreamStream = crate::verify_stream::VerifyEventStream;

    #[tracing::instrument(skip_all, fields(task = %req.get_ref().task_id))]
    async fn verify_task_stream(
        &self,
        req: Request<pb::VerifyTaskRequest>,
    ) -> Result<Response<Self::VerifyTaskStreamStream>, Status> {
        let events = crate::verify_stream::verify_events(self.0.clone(), req.into_inner());
        Ok(Response::new(events))
    }

    async fn list_workers(
        &self,
        _req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        Ok(Response::new(pb::ListWorkersResponse {
            workers: self.0.list_workers()?,
        }))
    }
}

#[derive(Clone)]
pub struct WorkerGrpc(pub Arc<Coordinator>);

#[tonic::async_trait]
impl WorkerService for WorkerGrpc {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(Response::new(self.0.register(req.into_inner()).await?))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Ok(Response::new(
            self.0.heartbeat(&req.into_inner().worker_id).await?,
        ))
    }

    async fn report_progress(
        &self,
        req: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        self.0.report_progress(req.into_inner()).await?;
        Ok(Response::new(pb::ReportProgressResponse {}))
    }
}
