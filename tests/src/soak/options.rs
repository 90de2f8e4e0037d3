//! How big a soak run is, and the settings it runs the engine with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The size and shape of one soak run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SoakOptions {
    /// Submissions to make; a quarter of them have two recipients.
    pub messages: u64,
    /// Maximum duration of the delivery phase; then the engine shuts down
    /// and reports what is left as unsent.
    pub cap: Duration,
    /// The chaos seed; print it, and set it again to replay the schedule.
    pub seed: u64,
    /// Bindings registered besides the default one.
    pub extra_bindings: u16,
    /// Destination domains, all routed to the fault peer.
    pub domains: u32,
    /// Submissions in the engine at once, at most.
    pub window: u64,
    /// The share of connections that get a fault.
    pub fault_share: f64,
    /// The share of connections on which the peer offers STARTTLS.
    pub tls_share: f64,
    /// The share of connections on which the peer offers CHUNKING, so the
    /// engine sends their messages as `BDAT` chunks.
    pub chunking_share: f64,
    /// How much resident memory may grow from the 25% sample to the 100%
    /// one: this many bytes per message finished in between, and never
    /// less than [`SoakOptions::rss_floor`].
    pub rss_bytes_per_message: u64,
    /// Minimum growth allowed whatever the run's size, for the allocator's
    /// noise.
    pub rss_floor: u64,
}

/// The environment variables [`SoakOptions::from_env`] reads.
pub const ENV_MESSAGES: &str = "EC_SOAK_MESSAGES";
/// See [`ENV_MESSAGES`].
pub const ENV_SECONDS: &str = "EC_SOAK_SECONDS";
/// See [`ENV_MESSAGES`].
pub const ENV_SEED: &str = "EC_SOAK_SEED";

impl SoakOptions {
    /// Returns the run CI makes: 5,000 submissions, at most 40 s of delivery.
    pub fn ci() -> Self {
        Self {
            messages: 5_000,
            cap: Duration::from_secs(40),
            ..Self::full()
        }
    }

    /// Returns the full run of `cargo xtask soak`: 100,000 submissions, at
    /// most 15 minutes of delivery.
    pub fn full() -> Self {
        Self {
            messages: 100_000,
            cap: Duration::from_secs(900),
            seed: fresh_seed(),
            extra_bindings: 3,
            domains: 50,
            window: 2_000,
            fault_share: 0.3,
            tls_share: 0.2,
            chunking_share: 0.5,
            rss_bytes_per_message: 100,
            rss_floor: 8 * 1024 * 1024,
        }
    }

    /// Applies [`ENV_MESSAGES`], [`ENV_SECONDS`] and [`ENV_SEED`] to `base`
    /// where they are set.
    ///
    /// # Errors
    ///
    /// When a variable is set but is not a whole number.
    pub fn from_env(base: Self) -> Result<Self, String> {
        let mut options = base;
        if let Some(messages) = read_env(ENV_MESSAGES)? {
            options.messages = messages;
        }
        if let Some(seconds) = read_env(ENV_SECONDS)? {
            options.cap = Duration::from_secs(seconds);
        }
        if let Some(seed) = read_env(ENV_SEED)? {
            options.seed = seed;
        }
        Ok(options)
    }
}

fn read_env(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|error| format!("{name}={text:?} is not a whole number: {error}")),
        Err(_) => Ok(None),
    }
}

/// Makes a seed from the clock, different on every run.
fn fresh_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
