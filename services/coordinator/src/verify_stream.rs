//! `VerifyTaskStream`: a verification that reports where it is in each table while it runs
//! (for progress bars), then ends with the report. A client that goes away stops the work.

use std::pin::Pin;
use std::sync::Arc;

use dbsync_proto::v1 as pb;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;

use crate::engine::Coordinator;

pub type VerifyEventStream = Pin<Box<dyn Stream<Item = Result<pb::VerifyEvent, Status>> + Send>>;

/// Runs the verification in a task; progress events are sent as they come (a few per chunk, so
/// the unbounded channel stays small) and the report or the error is the last item.
pub fn verify_events(
    coordinator: Arc<Coordinator>,
    request: pb::VerifyTaskRequest,
) -> VerifyEventStream {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let events = tx.clone();
        let work = coordinator.verify_with_progress(request, move |p| {
            let event = pb::verify_event::Event::Progress(p.into());
            let _ = events.send(Ok(pb::VerifyEvent { event: Some(event) }));
        });
        let last = tokio::select! {
            result = work => result,
            _ = tx.closed() => return,
        };
        let last = last
            .map(|report| pb::VerifyEvent {
                event: Some(pb::verify_event::Event::Report(report)),
            })
            .map_err(Status::from);
        let _ = tx.send(last);
    });
    Box::pin(UnboundedReceiverStream::new(rx))
}
