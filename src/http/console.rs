//! remote-console (`/remote-console`): health probes, the console list and
//! the per-node WebSocket (interactive by default, `mode=tail` for the log),
//! as OpenCHAMI's remote-console serves them. Decoding, then the console
//! service (`crate::console`) does the work; every attach and detach is
//! logged with the token's subject.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::json::QueryPairs;
use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::state::AppState;
use crate::console::view::{self, LineBuffer, View};
use crate::console::{Event, Hub};

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    let rc = "remote-console";
    vec![
        route(
            Method::GET,
            "/remote-console/liveness",
            rc,
            Anonymous,
            Api,
            "remote-console liveness",
            no_content,
        ),
        route(
            Method::GET,
            "/remote-console/readiness",
            rc,
            Anonymous,
            Api,
            "remote-console readiness",
            no_content,
        ),
        route(
            Method::GET,
            "/remote-console/health",
            rc,
            Anonymous,
            Api,
            "Console count and last inventory change",
            health,
        ),
        route(
            Method::GET,
            "/remote-console/consoles",
            rc,
            Token,
            Api,
            "Every console, how it is reached and its state",
            list,
        ),
        route(
            Method::GET,
            "/remote-console/consoles/{xname}",
            rc,
            Token,
            Api,
            "WebSocket: interactive console (writers), or ?mode=tail&follow=&lines= for the log",
            attach,
        ),
        route(
            Method::GET,
            "/remote-console/hostkeys",
            rc,
            Token,
            Api,
            "BMC console host keys pinned on first use",
            host_keys,
        ),
        route(
            Method::DELETE,
            "/remote-console/hostkeys/{bmc}",
            rc,
            Token,
            Api,
            "Forget a BMC's pinned host key (replaced or re-keyed BMC)",
            forget_host_key,
        ),
    ]
}

/// `GET /health`: counts as strings, as upstream sends them.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ConsoleHealth {
    pub consoles: String,
    /// RFC 3339: when the set of consoles last changed.
    pub hardwareupdate: String,
}

/// One console in `GET /consoles`: upstream's members, then the session's.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ConsoleEntry {
    pub id: String,
    /// `ssh` or `ipmi` (serial-over-LAN).
    #[serde(rename = "connectionType")]
    pub connection_type: String,
    #[serde(rename = "connectionHost")]
    pub connection_host: String,
    #[serde(rename = "connectionPort")]
    pub connection_port: u16,
    #[serde(rename = "consoleEntryCommand")]
    pub console_entry_command: String,
    pub bmc: String,
    /// `connecting`, `connected`, `waiting` (to reconnect), `stopped`, or
    /// `elsewhere` (another head sharing the store holds the session).
    pub state: crate::console::session::Phase,
    /// The head holding the session, when it is another one: attach there.
    #[serde(rename = "heldBy", skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub viewers: usize,
    /// An interactive viewer holds the keyboard.
    pub writer: bool,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ConsoleList {
    pub consoles: Vec<ConsoleEntry>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HostKeyList {
    pub hostkeys: Vec<crate::inventory::model::ConsoleHostKey>,
}

async fn host_keys(State(st): State<AppState>) -> Json<HostKeyList> {
    Json(HostKeyList {
        hostkeys: st.consoles.host_keys(),
    })
}

async fn forget_host_key(
    State(st): State<AppState>,
    Path(bmc): Path<String>,
) -> Result<Json<crate::inventory::model::ConsoleHostKey>, ApiError> {
    let bmc = crate::inventory::xname::normalize(&bmc)
        .map_err(|_| ApiError::bad_request(format!("{bmc:?} is not a BMC xname")))?;
    Ok(Json(st.consoles.forget_host_key(&bmc).await?))
}

async fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn health(State(st): State<AppState>) -> Json<ConsoleHealth> {
    Json(ConsoleHealth {
        consoles: st.consoles.list().len().to_string(),
        hardwareupdate: st.consoles.last_change().to_rfc3339(),
    })
}

async fn list(State(st): State<AppState>) -> Json<ConsoleList> {
    let consoles = st
        .consoles
        .list()
        .into_iter()
        .map(|c| ConsoleEntry {
            id: c.target.node,
            connection_type: c.target.backend.as_str().into(),
            connection_host: c.target.host,
            connection_port: c.target.port,
            console_entry_command: c.target.command,
            bmc: c.target.bmc,
            state: c.phase,
            error: c.error,
            viewers: c.viewers,
            writer: c.writer,
            held_by: c.holder,
        })
        .collect();
    Json(ConsoleList { consoles })
}

/// Server pings this often; a viewer silent for twice as long is dropped.
const PING: Duration = Duration::from_secs(30);
/// Largest output frame.
const FRAME: usize = 4096;
/// A viewer's WebSocket read buffer.
const VIEWER_READ_BUFFER: usize = 4096;

async fn attach(
    State(st): State<AppState>,
    Path(xname): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let q = QueryPairs::parse(q.as_deref());
    let view = view::parse(q.first("mode"), q.first("follow"), q.first("lines"))
        .map_err(ApiError::bad_request)?;
    let hub = st.consoles.get(&xname).ok_or_else(|| {
        ApiError::not_found(format!("Node {xname} doesn't exist or has no console"))
    })?;
    // The route layer checked the token; here it names the viewer and,
    // for the keyboard, must allow writes.
    let token = super::routes::bearer_in(&headers).unwrap_or_default();
    let caller = super::auth::verify(&st, &token, chrono::Utc::now().timestamp()).await?;
    let sub = caller.claims.sub.clone();
    // A viewer sends keystrokes, not bulk: a small read buffer, as the
    // buffer is prepared (zeroed) each time the socket is polled.
    let ws = ws
        .map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {e}")))?
        .read_buffer_size(VIEWER_READ_BUFFER);
    match view {
        View::Interactive => {
            if !super::auth::may_write(&caller) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("token for {sub} may not type on consoles; use mode=tail to watch"),
                ));
            }
            let lease = hub
                .take_writer()
                .ok_or_else(|| ApiError::conflict(format!("Console {xname} is already in use")))?;
            Ok(ws
                .on_upgrade(move |socket| async move {
                    let _viewer = hub.view();
                    tracing::info!(node = %xname, sub = %sub, mode = "interactive", "console viewer attached");
                    let why = interactive(socket, &hub, &xname, lease).await;
                    tracing::info!(node = %xname, sub = %sub, mode = "interactive", why, "console viewer detached");
                })
                .into_response())
        }
        View::Tail { follow, lines } => Ok(ws
            .on_upgrade(move |socket| async move {
                let _viewer = hub.view();
                tracing::info!(node = %xname, sub = %sub, mode = "tail", follow, lines, "console viewer attached");
                let why = tail(socket, &hub, follow, lines).await;
                tracing::info!(node = %xname, sub = %sub, mode = "tail", why, "console viewer detached");
            })
            .into_response()),
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) -> &'static str {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    reason
}

/// What a viewer's socket delivered.
enum FromViewer {
    Keys(Bytes),
    Alive,
    Gone,
}

fn from_viewer(m: Option<Result<Message, axum::Error>>, last: &mut Instant) -> FromViewer {
    *last = Instant::now();
    match m {
        Some(Ok(Message::Text(t))) => FromViewer::Keys(Bytes::copy_from_slice(t.as_bytes())),
        Some(Ok(Message::Binary(b))) => FromViewer::Keys(b),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => FromViewer::Alive,
        Some(Ok(Message::Close(_)) | Err(_)) | None => FromViewer::Gone,
    }
}

async fn interactive(
    mut socket: WebSocket,
    hub: &Hub,
    xname: &str,
    lease: crate::console::WriteLease,
) -> &'static str {
    let mut rx = hub.subscribe();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING, PING);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(Event::Output(data)) => {
                    for chunk in data.chunks(FRAME) {
                        if socket.send(Message::Binary(Bytes::copy_from_slice(chunk))).await.is_err() {
                            return "viewer gone";
                        }
                    }
                }
                Ok(Event::Reconnecting) => {
                    let note = format!("\n[Reconnecting to {xname}...]\n");
                    if socket.send(Message::Text(note.into())).await.is_err() {
                        return "viewer gone";
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Ok(Event::Gone) | Err(RecvError::Closed) => {
                    return close(socket, 1000, "node no longer exists").await;
                }
            },
            m = socket.recv() => match from_viewer(m, &mut last) {
                FromViewer::Keys(k) => lease.send(k),
                FromViewer::Alive => {}
                FromViewer::Gone => return "viewer closed",
            },
            _ = ping.tick() => {
                if last.elapsed() > 2 * PING {
                    return close(socket, 1001, "no pong").await;
                }
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return "viewer gone";
                }
            }
        }
    }
}

async fn send_line(socket: &mut WebSocket, line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line).into_owned();
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn tail(mut socket: WebSocket, hub: &Hub, follow: bool, lines: i64) -> &'static str {
    let crate::console::Tail { data, live: rx } = match hub.tail(lines, follow) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a console log");
            return close(socket, 1011, "cannot read the console log").await;
        }
    };
    let Some(mut rx) = rx else {
        let Some(data) = data else {
            return close(socket, 1000, "console log not available").await;
        };
        for line in crate::console::log::lines(&data) {
            if !send_line(&mut socket, line).await {
                return "viewer gone";
            }
        }
        return close(socket, 1000, "end of log").await;
    };
    let mut buf = LineBuffer::default();
    for line in buf.push(&data.unwrap_or_default()) {
        if !send_line(&mut socket, &line).await {
            return "viewer gone";
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING, PING);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(Event::Output(data)) => {
                    for line in buf.push(&data) {
                        if !send_line(&mut socket, &line).await {
                            return "viewer gone";
                        }
                    }
                }
                Ok(Event::Reconnecting) | Err(RecvError::Lagged(_)) => {}
                Ok(Event::Gone) | Err(RecvError::Closed) => {
                    return close(socket, 1000, "node no longer exists").await;
                }
            },
            m = socket.recv() => match from_viewer(m, &mut last) {
                FromViewer::Keys(_) | FromViewer::Alive => {}
                FromViewer::Gone => return "viewer closed",
            },
            _ = ping.tick() => {
                if last.elapsed() > 2 * PING {
                    return close(socket, 1001, "no pong").await;
                }
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return "viewer gone";
                }
            }
        }
    }
}
