//! The TDS server: accepts connections, runs the login handshake and drives one engine
//! [`Session`] per connection.
//!
//! Per connection three parts cooperate:
//! - a reader task reassembles client messages; an Attention (or the client going away) sets
//!   the connection's cancel flag at once, while the engine may still be running;
//! - the request loop runs each request synchronously on a blocking thread; its
//!   [`ResultSink`] encodes tokens straight into a buffer and hands complete packets to
//! - a writer task through a small bounded channel, so a result of any size streams in
//!   constant memory and a slow client slows the engine down (back-pressure).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::api::{
    Cancelled, EnvChange, ResultColumn, ResultSink, Session, SessionFactory, SqlError,
    StatementKind,
};
use crate::tds::login::{parse_login7, prelogin_reply};
use crate::tds::packet::{kind, read_message, Message, PacketFramer, DEFAULT_PACKET_SIZE};
use crate::tds::requests::{
    parse_bulk_load, parse_rpc, parse_sql_batch, parse_transaction_request,
};
use crate::tds::tokens::{self, done, token, RowEncoder};
use crate::tds::values::write_collation;
use crate::tds::WireError;
use crate::types::{Collation, SqlType, Value};

/// Encoded packets are handed to the socket writer in chunks of about this size.
const FLUSH_BYTES: usize = 32 * 1024;
/// Chunks in flight between the engine thread and the socket writer (bounds memory).
const OUT_CHANNEL_DEPTH: usize = 4;
/// Requests read ahead of the engine (clients send one at a time; attention jumps the queue
/// through the cancel flag).
const IN_CHANNEL_DEPTH: usize = 8;
/// Error number the stand-in uses for its own failures (a value it cannot encode).
const STANDIN_ERROR: i32 = 50999;

/// The TDS listener.
pub struct Server;

/// How long shutdown waits for connections to roll back and close before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running server. Dropping it (or calling [`ServerHandle::shutdown`]) stops accepting and
/// closes every connection.
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Bumped to close every open connection (each rolls back through `Session::disconnect`).
    close_connections: watch::Sender<u64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Bind `addr` (port 0 picks a free port; see `ServerHandle::addr`) and serve sessions
    /// from `factory` until shut down.
    pub async fn start(
        addr: SocketAddr,
        factory: Arc<dyn SessionFactory>,
    ) -> io::Result<ServerHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let (close_connections, _) = watch::channel(0);
        let task = tokio::spawn(accept_loop(
            listener,
            factory,
            stop_rx,
            close_connections.clone(),
        ));
        tracing::info!(%addr, "SQL Server stand-in listening");
        Ok(ServerHandle {
            addr,
            stop,
            close_connections,
            task: Some(task),
        })
    }
}

impl ServerHandle {
    /// Stop accepting and close all connections.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.disconnect_all();
    }

    /// Close every open connection as a network failure would (a running request is
    /// cancelled, open transactions roll back); the server keeps accepting new ones.
    pub fn disconnect_all(&self) {
        self.close_connections
            .send_modify(|generation| *generation += 1);
    }

    /// Wait until the server has stopped (after `shutdown`).
    pub async fn stopped(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(
    listener: TcpListener,
    factory: Arc<dyn SessionFactory>,
    mut stop: watch::Receiver<bool>,
    close_connections: watch::Sender<u64>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let factory = factory.clone();
                    let close = close_connections.subscribe();
                    connections.spawn(async move {
                        match serve_connection(stream, factory, close).await {
                            Ok(()) => tracing::debug!(%peer, "connection closed"),
                            Err(e) => tracing::warn!(%peer, error = %e, "connection closed after a protocol error"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    tracing::info!("SQL Server stand-in stopped");
}

/// What the reader task hands to the request loop.
enum Incoming {
    Message(Message),
    /// The client closed the connection or sent something unreadable.
    Closed,
}

async fn write_reply(
    wr: &mut OwnedWriteHalf,
    framer: &mut PacketFramer,
    mut tokens: BytesMut,
) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(tokens.len() + 64);
    framer.frame_rest(&mut tokens, true, &mut out);
    wr.write_all(&out).await
}

async fn expect_message(
    rd: &mut OwnedReadHalf,
    expected: u8,
    what: &str,
) -> Result<Option<Message>, WireError> {
    match read_message(rd).await? {
        None => Ok(None),
        Some(m) if m.kind == expected => Ok(Some(m)),
        Some(m) => Err(WireError::Framing(format!(
            "expected {what}, got packet type {:#04x}",
            m.kind
        ))),
    }
}

async fn serve_connection(
    stream: TcpStream,
    factory: Arc<dyn SessionFactory>,
    close: watch::Receiver<u64>,
) -> Result<(), WireError> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut framer = PacketFramer::new(DEFAULT_PACKET_SIZE);

    if expect_message(&mut rd, kind::PRELOGIN, "PRELOGIN")
        .await?
        .is_none()
    {
        return Ok(());
    }
    write_reply(&mut wr, &mut framer, prelogin_reply()).await?;

    let Some(login_message) = expect_message(&mut rd, kind::LOGIN7, "LOGIN7").await? else {
        return Ok(());
    };
    let login = parse_login7(&login_message.payload)?;
    let login_request = login.request.clone();
    let session = tokio::task::spawn_blocking(move || factory.login(&login_request))
        .await
        .map_err(|e| WireError::Io(io::Error::other(format!("login task failed: {e}"))))?;
    let session = match session {
        Ok(session) => session,
        Err(error) => {
            tracing::info!(user = %login.request.user, number = error.number, "login refused");
            let mut tokens = BytesMut::new();
            tokens::write_message(&mut tokens, token::ERROR, &error);
            tokens::write_done(&mut tokens, token::DONE, done::ERROR, 0, 0);
            write_reply(&mut wr, &mut framer, tokens).await?;
            return Ok(());
        }
    };
    let requested = if login.packet_size == 0 {
        DEFAULT_PACKET_SIZE
    } else {
        login.packet_size as usize
    };
    framer.set_packet_size(requested);
    let reply = login_reply(&session.database(), framer.packet_size());
    write_reply(&mut wr, &mut framer, reply).await?;
    run_session(session, rd, wr, framer, close).await
}

fn login_reply(database: &str, packet_size: usize) -> BytesMut {
    let mut tokens = BytesMut::new();
    tokens::write_env_text(&mut tokens, 1, database, "master");
    let mut collation = BytesMut::new();
    write_collation(&mut collation, &Collation::SQL_LATIN1_GENERAL_CP1_CI_AS);
    tokens::write_env_bytes(&mut tokens, 7, &collation, &[]);
    let info = SqlError::new(
        5701,
        0,
        2,
        format!("Changed database context to '{database}'."),
    );
    tokens::write_message(&mut tokens, token::INFO, &info);
    tokens::write_loginack(&mut tokens);
    let size = packet_size.to_string();
    tokens::write_env_text(&mut tokens, 4, &size, &size);
    tokens::write_done(&mut tokens, token::DONE, done::FINAL, 0, 0);
    tokens
}

async fn read_requests(mut rd: OwnedReadHalf, tx: mpsc::Sender<Incoming>, cancel: Arc<AtomicBool>) {
    loop {
        match read_message(&mut rd).await {
            Ok(Some(message)) => {
                if message.kind == kind::ATTENTION {
                    cancel.store(true, Ordering::SeqCst);
                }
                if tx.send(Incoming::Message(message)).await.is_err() {
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection: unreadable request");
                break;
            }
        }
    }
    cancel.store(true, Ordering::SeqCst);
    let _ = tx.send(Incoming::Closed).await;
}

async fn write_packets(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = wr.write_all(&chunk).await {
            tracing::debug!(error = %e, "client stopped reading");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// The request loop of a logged-in connection.
async fn run_session(
    session: Box<dyn Session>,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    framer: PacketFramer,
    mut close: watch::Receiver<u64>,
) -> Result<(), WireError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let (in_tx, mut in_rx) = mpsc::channel(IN_CHANNEL_DEPTH);
    let (out_tx, out_rx) = mpsc::channel(OUT_CHANNEL_DEPTH);
    let reader = tokio::spawn(read_requests(rd, in_tx, cancel.clone()));
    let writer = tokio::spawn(write_packets(wr, out_rx));

    let mut session = Some(session);
    let mut sink = Some(WireSink::new(framer, out_tx, cancel.clone()));
    let mut outcome = Ok(());
    loop {
        let incoming = tokio::select! {
            incoming = in_rx.recv() => incoming,
            _ = close.changed() => None,
        };
        let Some(Incoming::Message(message)) = incoming else {
            break;
        };
        let mut s = sink.take().expect("sink is returned after each request");
        let mut sess = session
            .take()
            .expect("session is returned after each request");
        let mut request = tokio::task::spawn_blocking(move || {
            let result = handle_message(message, sess.as_mut(), &mut s);
            (s, sess, result)
        });
        let mut closing = false;
        let joined = tokio::select! {
            joined = &mut request => joined,
            _ = close.changed() => {
                // Closed from the handle: cancel the running request, then roll back below.
                cancel.store(true, Ordering::SeqCst);
                closing = true;
                request.await
            }
        };
        let (s, sess, result) = match joined {
            Ok(done) => done,
            Err(e) => {
                // The engine panicked: the session is gone with it; close the connection.
                tracing::error!(error = %e, "engine request panicked; closing the connection");
                outcome = Err(WireError::Io(io::Error::other(format!(
                    "engine request panicked: {e}"
                ))));
                break;
            }
        };
        session = Some(sess);
        let gone = s.client_gone || closing;
        sink = Some(s);
        if let Err(e) = result {
            outcome = Err(e);
            break;
        }
        if gone {
            break;
        }
    }
    // However the connection ends, the client is gone: roll back what it left open.
    if let Some(mut sess) = session {
        let _ = tokio::task::spawn_blocking(move || sess.disconnect()).await;
    }
    drop(sink);
    reader.abort();
    let _ = writer.await;
    outcome
}

/// Decode one request and run it on the session (on a blocking thread).
fn handle_message(
    message: Message,
    session: &mut dyn Session,
    sink: &mut WireSink,
) -> Result<(), WireError> {
    if message.kind == kind::ATTENTION {
        sink.acknowledge_attention();
        return Ok(());
    }
    sink.begin(session.transaction_descriptor() != 0);
    match message.kind {
        kind::SQL_BATCH => {
            let (descriptor, sql) = parse_sql_batch(&message.payload)?;
            session.request_descriptor(descriptor);
            session.execute_batch(&sql, sink);
            sink.finish(false);
        }
        kind::RPC => {
            let rpc = parse_rpc(&message.payload)?;
            session.request_descriptor(rpc.descriptor);
            for call in rpc.calls {
                if !sink.begin_rpc() {
                    break;
                }
                session.execute_rpc(&call.proc, call.params, sink);
                sink.end_rpc();
            }
            sink.finish(true);
        }
        kind::TRANSACTION_MANAGER => {
            let (descriptor, request) = parse_transaction_request(&message.payload)?;
            session.request_descriptor(descriptor);
            session.transaction(&request, sink);
            sink.finish(false);
        }
        kind::BULK_LOAD => {
            let (columns, rows) = parse_bulk_load(&message.payload)?;
            session.bulk_rows(&columns, rows, sink);
            sink.finish(false);
        }
        other => {
            return Err(WireError::Unsupported(format!(
                "request packet type {other:#04x} after login"
            )))
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct PendingDone {
    token: u8,
    status: u16,
    curcmd: u16,
    rows: u64,
}

/// Why the sink stopped accepting output for the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Attention: the response ends with DONE(ATTN) when the attention is processed.
    Attention,
    /// A value could not be encoded: an ERROR was sent; the response ends with DONE(ERROR).
    Failed,
}

/// The [`ResultSink`] that writes TDS tokens.
struct WireSink {
    tokens: BytesMut,
    out: BytesMut,
    framer: PacketFramer,
    tx: mpsc::Sender<Bytes>,
    cancel: Arc<AtomicBool>,
    encoder: RowEncoder,
    /// The last DONE* token, held back until we know whether more tokens follow (DONE_MORE).
    pending_done: Option<PendingDone>,
    in_transaction: bool,
    /// An ERROR was written since the last DONE (that DONE then carries DONE_ERROR).
    error_since_done: bool,
    /// Per call of an RPC request: an ERROR was sent / the engine sent RETURNSTATUS.
    rpc_open: bool,
    rpc_error: bool,
    return_status_sent: bool,
    stop: Option<Stop>,
    client_gone: bool,
}

impl WireSink {
    fn new(framer: PacketFramer, tx: mpsc::Sender<Bytes>, cancel: Arc<AtomicBool>) -> Self {
        WireSink {
            tokens: BytesMut::with_capacity(framer.packet_size() * 2),
            out: BytesMut::with_capacity(FLUSH_BYTES + framer.packet_size()),
            framer,
            tx,
            cancel,
            encoder: RowEncoder::default(),
            pending_done: None,
            in_transaction: false,
            error_since_done: false,
            rpc_open: false,
            rpc_error: false,
            return_status_sent: false,
            stop: None,
            client_gone: false,
        }
    }

    fn begin(&mut self, in_transaction: bool) {
        self.pending_done = None;
        self.in_transaction = in_transaction;
        self.error_since_done = false;
        self.rpc_open = false;
        self.stop = None;
    }

    /// Start one call of an RPC request; false when the request was cancelled or failed.
    fn begin_rpc(&mut self) -> bool {
        self.rpc_open = true;
        self.rpc_error = false;
        self.return_status_sent = false;
        self.stop.is_none() && !self.client_gone
    }

    /// Close one call of an RPC request: RETURNSTATUS 0 when the engine sent none and no error
    /// occurred (as for sp_executesql), then DONEPROC, held back so that a following call of
    /// the same request marks it DONE_MORE.
    fn end_rpc(&mut self) {
        if !self.rpc_open || self.client_gone || self.stop == Some(Stop::Attention) {
            return;
        }
        self.rpc_open = false;
        self.flush_pending(true);
        if !self.return_status_sent && !self.rpc_error {
            tokens::write_return_status(&mut self.tokens, 0);
        }
        let status = if self.rpc_error { done::ERROR } else { 0 } | self.inxact();
        self.pending_done = Some(PendingDone {
            token: token::DONEPROC,
            status,
            curcmd: 0,
            rows: 0,
        });
    }

    /// Refuse output once the request is cancelled or failed.
    fn check(&mut self) -> Result<(), Cancelled> {
        if self.stop.is_some() || self.client_gone {
            return Err(Cancelled);
        }
        if self.cancel.load(Ordering::Relaxed) {
            self.stop = Some(Stop::Attention);
            return Err(Cancelled);
        }
        Ok(())
    }

    /// Write the held-back DONE, with DONE_MORE when other tokens follow it.
    fn flush_pending(&mut self, more: bool) {
        if let Some(d) = self.pending_done.take() {
            let status = d.status | if more { done::MORE } else { 0 };
            tokens::write_done(&mut self.tokens, d.token, status, d.curcmd, d.rows);
        }
    }

    fn inxact(&self) -> u16 {
        if self.in_transaction {
            done::INXACT
        } else {
            0
        }
    }

    /// Hand complete packets to the writer once enough are buffered.
    fn pump(&mut self) -> Result<(), Cancelled> {
        if self.tokens.len() > self.framer.packet_size() {
            self.framer.frame_full(&mut self.tokens, &mut self.out);
            if self.out.len() >= FLUSH_BYTES {
                self.send_out()?;
            }
        }
        Ok(())
    }

    fn send_out(&mut self) -> Result<(), Cancelled> {
        if self.out.is_empty() {
            return Ok(());
        }
        let chunk = self.out.split().freeze();
        self.out.reserve(FLUSH_BYTES + self.framer.packet_size());
        if self.tx.blocking_send(chunk).is_err() {
            self.client_gone = true;
            return Err(Cancelled);
        }
        Ok(())
    }

    /// An encoding failure: tell the client and stop the request.
    fn fail(&mut self, message: String) -> Cancelled {
        tracing::error!(%message, "stand-in cannot encode a value the engine produced");
        self.flush_pending(true);
        let error = SqlError::new(
            STANDIN_ERROR,
            16,
            1,
            format!("dbsync-sqlserver-sim: {message}"),
        );
        tokens::write_message(&mut self.tokens, token::ERROR, &error);
        self.rpc_error = true;
        self.error_since_done = true;
        self.stop = Some(Stop::Failed);
        Cancelled
    }

    /// Complete the response of a request.
    fn finish(&mut self, rpc: bool) {
        if self.client_gone {
            return;
        }
        if self.stop == Some(Stop::Attention) {
            // The DONE(ATTN) that ends this response is written when the attention message
            // itself is processed, right after this request.
            self.flush_pending(true);
            self.framer
                .frame_rest(&mut self.tokens, false, &mut self.out);
            let _ = self.send_out();
            return;
        }
        if rpc {
            // The last call's DONEPROC ends the response.
            self.end_rpc();
            self.flush_pending(false);
        } else if self.pending_done.is_some() && self.stop.is_none() {
            self.flush_pending(false);
        } else {
            self.flush_pending(true);
            let status = if self.error_since_done {
                done::ERROR
            } else {
                0
            } | self.inxact();
            tokens::write_done(&mut self.tokens, token::DONE, status, 0, 0);
        }
        self.framer
            .frame_rest(&mut self.tokens, true, &mut self.out);
        let _ = self.send_out();
    }

    /// Answer an attention: DONE(ATTN) ends the cancelled response.
    fn acknowledge_attention(&mut self) {
        self.cancel.store(false, Ordering::SeqCst);
        if self.client_gone {
            return;
        }
        tokens::write_done(&mut self.tokens, token::DONE, done::ATTN, 0, 0);
        self.framer
            .frame_rest(&mut self.tokens, true, &mut self.out);
        let _ = self.send_out();
    }
}

impl ResultSink for WireSink {
    fn columns(&mut self, columns: &[ResultColumn]) -> Result<(), Cancelled> {
        self.check()?;
        self.flush_pending(true);
        self.encoder.set_columns(columns);
        tokens::write_colmetadata(&mut self.tokens, columns);
        self.pump()
    }

    fn row(&mut self, row: &[Value]) -> Result<(), Cancelled> {
        self.check()?;
        if let Err(e) = self.encoder.write_row(&mut self.tokens, row) {
            return Err(self.fail(e.0));
        }
        self.pump()
    }

    fn done(
        &mut self,
        kind: StatementKind,
        count: Option<u64>,
        in_proc: bool,
    ) -> Result<(), Cancelled> {
        self.check()?;
        self.flush_pending(true);
        let mut status = self.inxact();
        if count.is_some() {
            status |= done::COUNT;
        }
        if self.error_since_done {
            status |= done::ERROR;
        }
        self.error_since_done = false;
        let token = if in_proc {
            token::DONEINPROC
        } else {
            token::DONE
        };
        self.pending_done = Some(PendingDone {
            token,
            status,
            curcmd: tokens::curcmd(kind),
            rows: count.unwrap_or(0),
        });
        self.pump()
    }

    fn error(&mut self, error: &SqlError) -> Result<(), Cancelled> {
        self.check()?;
        self.flush_pending(true);
        tokens::write_message(&mut self.tokens, token::ERROR, error);
        self.error_since_done = true;
        self.rpc_error = true;
        self.pump()
    }

    fn info(&mut self, number: i32, message: &str) -> Result<(), Cancelled> {
        self.check()?;
        self.flush_pending(true);
        tokens::write_message(
            &mut self.tokens,
            token::INFO,
            &SqlError::new(number, 0, 1, message),
        );
        self.pump()
    }

    fn env_change(&mut self, change: &EnvChange) -> Result<(), Cancelled> {
        self.check()?;
        self.flush_pending(true);
        match change {
            EnvChange::BeginTransaction { .. } => self.in_transaction = true,
            EnvChange::CommitTransaction { .. } | EnvChange::RollbackTransaction { .. } => {
                self.in_transaction = false
            }
            EnvChange::Database { .. } => {}
        }
        tokens::write_env_change(&mut self.tokens, change);
        self.pump()
    }

    fn return_status(&mut self, status: i32) -> Result<(), Cancelled> {
        self.check()?;
        self.flush_pending(true);
        tokens::write_return_status(&mut self.tokens, status);
        self.return_status_sent = true;
        self.pump()
    }

    fn return_value(
        &mut self,
        ordinal: u16,
        name: &str,
        ty: &SqlType,
        value: &Value,
    ) -> Result<(), Cancelled> {
        self.check()?;
        self.flush_pending(true);
        let start = self.tokens.len();
        let mut scratch = std::mem::take(self.encoder.scratch());
        let result =
            tokens::write_return_value(&mut self.tokens, ordinal, name, ty, value, &mut scratch);
        *self.encoder.scratch() = scratch;
        if let Err(e) = result {
            self.tokens.truncate(start);
            return Err(self.fail(format!("output parameter {name}: {}", e.0)));
        }
        self.pump()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RpcParam, RpcProc, TransactionRequest};
    use crate::tds::values::put_b_varchar;
    use bytes::BufMut;

    /// Answers every RPC with one DONEINPROC; the second call of a batch fails.
    struct Calls(u32);

    impl Session for Calls {
        fn database(&self) -> String {
            "db".into()
        }
        fn execute_batch(&mut self, _: &str, _: &mut dyn ResultSink) {}
        fn execute_rpc(&mut self, _: &RpcProc, _: Vec<RpcParam>, sink: &mut dyn ResultSink) {
            self.0 += 1;
            if self.0 == 2 {
                let _ = sink.error(&SqlError::new(50000, 16, 1, "second call fails"));
            }
            let _ = sink.done(StatementKind::Update, Some(self.0 as u64), true);
        }
        fn transaction(&mut self, _: &TransactionRequest, _: &mut dyn ResultSink) {}
        fn bulk_rows(&mut self, _: &[ResultColumn], _: Vec<Vec<Value>>, _: &mut dyn ResultSink) {}
        fn transaction_descriptor(&self) -> u64 {
            0
        }
        fn disconnect(&mut self) {}
    }

    /// Token types and DONE statuses of a reply, with the EOM bit of each packet.
    fn tokens_of(reply: &[u8]) -> (Vec<(u8, u16)>, Vec<bool>) {
        let mut payload = Vec::new();
        let mut eoms = Vec::new();
        let mut rest = reply;
        while !rest.is_empty() {
            let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
            eoms.push(rest[1] & 1 == 1);
            payload.extend_from_slice(&rest[8..len]);
            rest = &rest[len..];
        }
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < payload.len() {
            let t = payload[i];
            match t {
                token::DONE | token::DONEPROC | token::DONEINPROC => {
                    tokens.push((t, u16::from_le_bytes([payload[i + 1], payload[i + 2]])));
                    i += 13;
                }
                token::RETURNSTATUS => {
                    tokens.push((t, 0));
                    i += 5;
                }
                token::ERROR => {
                    tokens.push((t, 0));
                    i += 3 + u16::from_le_bytes([payload[i + 1], payload[i + 2]]) as usize;
                }
                other => panic!("unexpected token {other:#04x}"),
            }
        }
        (tokens, eoms)
    }

    #[test]
    fn batched_rpc_calls_each_end_with_doneproc_and_only_the_last_is_final() {
        let mut payload = BytesMut::new();
        payload.put_u32_le(22);
        payload.put_u32_le(18);
        payload.put_u16_le(2);
        payload.put_u64_le(0);
        payload.put_u32_le(1);
        for (i, name) in ["p1", "p2", "p3"].iter().enumerate() {
            if i > 0 {
                payload.put_u8(0xFF);
            }
            payload.put_u16_le(2);
            for unit in name.encode_utf16() {
                payload.put_u16_le(unit);
            }
            payload.put_u16_le(0);
            put_b_varchar(&mut payload, "@a");
            payload.put_u8(0);
            payload.put_slice(&[0x26, 4, 4, 1, 0, 0, 0]);
        }
        let (tx, mut rx) = mpsc::channel(OUT_CHANNEL_DEPTH);
        let mut sink = WireSink::new(
            PacketFramer::new(4096),
            tx,
            Arc::new(AtomicBool::new(false)),
        );
        let mut session = Calls(0);
        let message = Message {
            kind: kind::RPC,
            payload,
        };
        handle_message(message, &mut session, &mut sink).unwrap();
        assert_eq!(session.0, 3);
        let mut reply = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            reply.extend_from_slice(&chunk);
        }
        let (tokens, eoms) = tokens_of(&reply);
        let inproc = done::COUNT | done::MORE;
        assert_eq!(
            tokens,
            [
                (token::DONEINPROC, inproc),
                (token::RETURNSTATUS, 0),
                (token::DONEPROC, done::MORE),
                (token::ERROR, 0),
                (token::DONEINPROC, inproc | done::ERROR),
                (token::DONEPROC, done::ERROR | done::MORE),
                (token::DONEINPROC, inproc),
                (token::RETURNSTATUS, 0),
                (token::DONEPROC, done::FINAL),
            ]
        );
        assert_eq!(eoms, [true]);
    }
}
