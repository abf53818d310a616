//! [`ChangeSource`] for SQL Server CDC: the [`CdcStream`] poller behind the shared trait, so
//! in-process consumers (tests, `dbsync up`) can read changes without gRPC.

use dbsync_core::source::ChangeSource;
use dbsync_core::Position;
use dbsync_proto::v1::ChangeMessage;

use crate::error::CaptureError;
use crate::mssql::cdc::CdcStream;

impl ChangeSource for CdcStream {
    type Error = CaptureError;

    async fn next_message(&mut self) -> Result<ChangeMessage, CaptureError> {
        CdcStream::next_message(self).await
    }

    fn position(&self) -> Position {
        CdcStream::position(self)
    }
}
