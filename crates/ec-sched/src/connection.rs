//! The scheduler's record of one connection (Momentum's `connection`).

use std::fmt;
use std::net::SocketAddr;
use std::panic::Location;
use std::time::Instant;

use ec_types::{
    AddressKey, BindingSlot, CloseReason, ConnectionHandle, ConnectionId, ConnectionState,
    DeliveryConstruct, SessionCapabilities, Target, TlsInfo,
};

use crate::domain::LaneKey;
use crate::driver::SessionLink;
use crate::limits::HostKey;
use crate::timers::TimerKey;

/// The scheduler's record of one connection, kept from the start of its
/// connect until its socket is gone.
pub struct Connection {
    pub(crate) handle: ConnectionHandle,
    pub(crate) id: ConnectionId,
    pub(crate) state: ConnectionState,
    pub(crate) lane: LaneKey,
    pub(crate) host: HostKey,
    pub(crate) link: Option<Box<dyn SessionLink>>,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
    /// Set once the connection counts in an `AddressMetrics` entry.
    pub(crate) address: Option<AddressKey>,
    pub(crate) tls: Option<TlsInfo>,
    pub(crate) capabilities: Option<SessionCapabilities>,
    pub(crate) opened_at: Instant,
    pub(crate) connected_at: Option<Instant>,
    pub(crate) ready_at: Option<Instant>,
    pub(crate) timers: ConnectionTimers,
    pub(crate) closing: Option<Closing>,
    /// Messages whose transaction on this connection ended with every
    /// recipient final and at least one delivered.
    pub(crate) messages_delivered: u32,
    /// Messages that spent a delivery attempt on this connection: each
    /// transaction it began, whatever its result.
    pub(crate) messages_attempted: u32,
    /// The session failure that started the close, as text.
    pub(crate) failure: Option<String>,
}

/// The pending timers of a connection; closing cancels all but the close
/// deadline.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTimers {
    pub(crate) idle: Option<TimerKey>,
    pub(crate) max_age: Option<TimerKey>,
    pub(crate) close_deadline: Option<TimerKey>,
}

/// The reason, time and source location of a connection's close.
#[derive(Debug, Clone, Copy)]
pub struct Closing {
    /// The reason given to `closeconn`.
    pub reason: CloseReason,
    /// When the close began.
    pub started: Instant,
    /// The source location that asked for the close.
    pub site: &'static Location<'static>,
}

impl Connection {
    /// The scheduler's handle.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle
    }

    /// The id for logs and delivery records.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The binding it belongs to.
    pub fn binding(&self) -> BindingSlot {
        self.lane.binding
    }

    /// Where it connects.
    pub fn target(&self) -> &Target {
        &self.host.target
    }

    /// Our end, once connected.
    pub fn local(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The server's end, once connected.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The TLS session, once ready over TLS.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// What the server offered, once ready.
    pub fn capabilities(&self) -> Option<SessionCapabilities> {
        self.capabilities
    }

    /// When its connect started.
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// Whether the TCP connect completed. A connection that never
    /// connected gets no close command: its socket is only dropped.
    pub fn ever_connected(&self) -> bool {
        self.connected_at.is_some()
    }

    /// When it became ready for mail.
    pub fn ready_at(&self) -> Option<Instant> {
        self.ready_at
    }

    /// Set once `closeconn` has run.
    pub fn closing(&self) -> Option<&Closing> {
        self.closing.as_ref()
    }

    /// Messages it delivered.
    pub fn messages_delivered(&self) -> u32 {
        self.messages_delivered
    }

    pub(crate) fn new(
        construct: &DeliveryConstruct,
        lane: LaneKey,
        host: HostKey,
        now: Instant,
    ) -> Self {
        Self {
            handle: construct.handle,
            id: construct.id,
            state: ConnectionState::Connecting,
            lane,
            host,
            link: None,
            local: None,
            peer: None,
            address: None,
            tls: None,
            capabilities: None,
            opened_at: now,
            connected_at: None,
            ready_at: None,
            timers: ConnectionTimers::default(),
            closing: None,
            messages_delivered: 0,
            messages_attempted: 0,
            failure: None,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("handle", &self.handle)
            .field("id", &self.id)
            .field("state", &self.state)
            .field("lane", &self.lane)
            .field("target", &self.host.target)
            .field("peer", &self.peer)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

/// A connection table entry: the record and its delivery construct, kept
/// side by side so `closeconn` can borrow both mutably.
#[derive(Debug)]
pub(crate) struct ConnectionEntry {
    pub(crate) connection: Connection,
    pub(crate) construct: DeliveryConstruct,
}
