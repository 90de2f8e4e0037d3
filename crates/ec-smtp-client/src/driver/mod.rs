//! The tokio side: sessions as tasks, and the [`SmtpDriver`] through which
//! the scheduler opens and closes them.

mod batch;
mod connect;
mod fallback;
mod mx;
mod session;
mod shutdown;
mod transport;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use ec_sched::{
    failure_of, CloseTicket, EventSender, Scheduler, SchedulerToken, SessionDriver, SessionLink,
    Wake,
};
use ec_types::{
    CloseReason, ConnectionHandle, DnsSettings, Event, OpenRequest, SessionCommand, SessionEvent,
};
use tokio::sync::mpsc;

use self::batch::{BatchedEvents, EventBatcher};
use self::fallback::TlsFallback;
use self::mx::MxResolver;
pub use self::session::EventSink;
use crate::closeconn::closeconn;
use crate::tls::TlsConfigCache;

/// Runs SMTP sessions as tasks on a tokio runtime for an `ec-sched`
/// scheduler, and closes them through [`closeconn`].
pub struct SmtpDriver {
    runtime: tokio::runtime::Handle,
    /// Created with the first session, from its scheduler's event sender.
    events: Option<Arc<EventBatcher>>,
    /// Called after each batch of events when the scheduler runs a
    /// [`LocalLoop`](ec_sched::LocalLoop) that waits for it.
    wake: Option<Wake>,
    tls_configs: Arc<TlsConfigCache>,
    tls_fallback: TlsFallback,
    resolver: Arc<MxResolver>,
}

impl SmtpDriver {
    /// A driver that spawns its sessions on `runtime` and looks up MX hosts
    /// through the system's DNS resolvers.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            runtime,
            events: None,
            wake: None,
            tls_configs: Arc::new(TlsConfigCache::default()),
            tls_fallback: TlsFallback::default(),
            resolver: Arc::new(MxResolver::new(DnsSettings::default())),
        }
    }

    /// Looks up MX hosts and their addresses through the DNS servers that
    /// `dns` names, instead of the system's.
    #[must_use]
    pub fn dns(mut self, dns: DnsSettings) -> Self {
        self.resolver = Arc::new(MxResolver::new(dns));
        self
    }
}

impl fmt::Debug for SmtpDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpDriver")
            .field("runtime", &self.runtime)
            .field("events", &self.events)
            .field("wake", &self.wake.is_some())
            .field("tls_configs", &self.tls_configs)
            .field("tls_fallback", &self.tls_fallback)
            .field("resolver", &self.resolver)
            .finish()
    }
}

impl SmtpDriver {
    /// Calls `wake` after sending each batch of session events: needed when
    /// the scheduler runs as a [`LocalLoop`](ec_sched::LocalLoop), which
    /// waits for it.
    #[must_use]
    pub fn waking(mut self, wake: Wake) -> Self {
        self.wake = Some(wake);
        self
    }
}

impl SessionDriver for SmtpDriver {
    fn open(
        &mut self,
        _token: &SchedulerToken,
        mut request: OpenRequest,
        events: EventSender,
    ) -> Box<dyn SessionLink> {
        self.tls_fallback.apply(&mut request, Instant::now());
        let (commands, receiver) = mpsc::unbounded_channel();
        let batcher = self.events.get_or_insert_with(|| {
            EventBatcher::start(&self.runtime, events.batch_sender(), self.wake.clone())
        });
        self.runtime.spawn(session::run(
            request,
            BatchedEvents::new(Arc::clone(batcher), events),
            receiver,
            self.tls_configs.clone(),
            self.resolver.clone(),
        ));
        Box::new(TokioLink(commands))
    }

    fn close(
        &mut self,
        token: &mut SchedulerToken,
        scheduler: &mut Scheduler,
        handle: ConnectionHandle,
        event: &Event,
        reason: CloseReason,
        now: Instant,
    ) {
        let Some(parts) = scheduler.close_parts(token, handle) else {
            tracing::debug!(%handle, %reason, "close of a connection that is already gone");
            return;
        };
        if let Some(failure) = failure_of(event, handle) {
            let tls = &parts.construct.settings.tls;
            let (policy, verify) = (tls.policy, tls.effective_verify());
            self.tls_fallback
                .note(parts.connection.target(), policy, verify, failure, now);
        }
        if let CloseTicket::AlreadyClosing { .. } =
            closeconn(token, parts, event, Some(now), reason)
        {
            tracing::trace!(%handle, "connection was already closing");
        }
    }
}

/// The scheduler's end of a session task's command channel.
struct TokioLink(mpsc::UnboundedSender<SessionCommand>);

impl SessionLink for TokioLink {
    fn send(&mut self, command: SessionCommand) {
        // An error means the task has ended; its Closed event, or the close
        // deadline, settles the connection.
        let _ = self.0.send(command);
    }
}

impl EventSink for EventSender {
    fn report(&self, event: SessionEvent) {
        if self.send(event).is_err() {
            tracing::debug!(handle = %self.handle(), "scheduler gone; event dropped");
        }
    }

    fn bytes_sent(&self, bytes: u64) {
        EventSender::bytes_sent(self, bytes);
    }
}
