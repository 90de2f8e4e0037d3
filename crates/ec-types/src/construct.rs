//! The delivery construct: a connection's working context
//! (Momentum's `delivery_construct`).

use std::sync::Arc;
use std::time::Instant;

use crate::address::Domain;
use crate::binding::BindingSlot;
use crate::config::EffectiveSettings;
use crate::connection::{ConnectionHandle, ConnectionId};
use crate::message::{MessageId, SharedMessage};
use crate::reply::Reply;

/// What a connection is working on: its current batch and the settings
/// snapshot taken when it opened, so that a configuration change never
/// alters a session half-way.
#[derive(Debug, Clone)]
pub struct DeliveryConstruct {
    /// The connection's handle.
    pub handle: ConnectionHandle,
    /// The connection's id.
    pub id: ConnectionId,
    /// The binding.
    pub binding: BindingSlot,
    /// The destination domain.
    pub domain: Domain,
    /// Messages handed to the session that have no transaction outcome yet.
    /// While a message is here it is "in flight on this connection" and in
    /// no queue.
    pub batch: Vec<SharedMessage>,
    /// The recipients rejected with a 4xx or 5xx reply to RCPT in the
    /// transaction under way (message, recipient index, reply), until the
    /// transaction ends. A close in the middle of it fails those with a
    /// 5xx and defers those with a 4xx, each with its own reply.
    pub rejected: Vec<(MessageId, usize, Reply)>,
    /// The rejection of MAIL in the transaction under way (message, reply),
    /// until the transaction ends. A close in the middle of it fails every
    /// recipient of the transaction with a 5xx reply, or defers them with a
    /// 4xx reply.
    pub mail_rejected: Option<(MessageId, Reply)>,
    /// Settings snapshot.
    pub settings: Arc<EffectiveSettings>,
    /// Transactions finished on this connection.
    pub deliveries: u32,
    /// The connection got its last batch (see
    /// [`SessionCommand::Deliver`](crate::SessionCommand::Deliver)):
    /// it takes no more mail, even if a message of that batch got no
    /// transaction.
    pub last_batch_sent: bool,
    /// When the connect started.
    pub opened_at: Instant,
}

impl DeliveryConstruct {
    /// A construct with an empty batch.
    pub fn new(
        handle: ConnectionHandle,
        id: ConnectionId,
        binding: BindingSlot,
        domain: Domain,
        settings: Arc<EffectiveSettings>,
        opened_at: Instant,
    ) -> Self {
        Self {
            handle,
            id,
            binding,
            domain,
            batch: Vec::new(),
            rejected: Vec::new(),
            mail_rejected: None,
            settings,
            deliveries: 0,
            last_batch_sent: false,
            opened_at,
        }
    }

    /// Whether the connection may take another batch under its delivery
    /// and age limits.
    pub fn reusable(&self, now: Instant) -> bool {
        let max = self.settings.max_deliveries_per_connection;
        let under_delivery_limit = max == 0 || (self.deliveries < max && !self.last_batch_sent);
        let under_age_limit = now.duration_since(self.opened_at) < self.settings.max_connection_age;
        under_delivery_limit && under_age_limit
    }
}
