//! The session's timers: one per wait, after RFC 5321 section 4.5.3.2.
//!
//! The session waits for one thing at a time, so at most one timer runs.
//! Its deadline is computed from the `now` that the driver passes in; this
//! module never reads a clock.

use std::fmt;
use std::time::Duration;

/// How long the session waits for each reply or step.
///
/// RFC 5321 section 4.5.3.2 gives minimums for the waits it names; a
/// client that gives up sooner risks duplicates or needless deferrals. The
/// connect timeout is the driver's, because the session starts after the
/// TCP connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Wait for the 220 banner. Default 5 minutes (RFC 5321 section
    /// 4.5.3.2.1, "Initial 220 Message").
    pub banner: Duration,
    /// Wait for the EHLO or HELO reply. Default 5 minutes; RFC 5321 names no
    /// EHLO timeout, so this takes the MAIL value.
    pub ehlo: Duration,
    /// Wait for the reply to STARTTLS. Default 2 minutes; RFC 3207 names
    /// none, so this takes the DATA initiation value.
    pub starttls: Duration,
    /// The whole TLS handshake, which the driver runs. Default 60 seconds;
    /// no RFC names one, and a handshake needs a few round trips.
    pub tls_handshake: Duration,
    /// Wait for the reply to RSET. Default 2 minutes; RFC 5321 names none.
    pub rset: Duration,
    /// Wait for the reply to MAIL. Default 5 minutes (RFC 5321 section
    /// 4.5.3.2.2, "MAIL Command").
    pub mail: Duration,
    /// Wait for each RCPT reply. Default 5 minutes (RFC 5321 section
    /// 4.5.3.2.3, "RCPT Command").
    pub rcpt: Duration,
    /// Wait for the 354 reply to DATA. Default 2 minutes (RFC 5321 section
    /// 4.5.3.2.4, "DATA Initiation").
    pub data_initiation: Duration,
    /// Write the message data with its final dot, from the 354 reply until
    /// the driver reports the write done. Default 3 minutes (RFC 5321
    /// section 4.5.3.2.5, "Data Block").
    // NOTE: RFC 5321 applies this to each TCP send call, but the session
    // gets one write for the whole message, so a very large message on a slow
    // link may need a larger value.
    pub data_block: Duration,
    /// Wait for the reply to the final dot, from the end of the data write.
    /// Default 10 minutes (RFC 5321 section 4.5.3.2.6, "DATA Termination");
    /// less risks a duplicate, because the server may still be accepting
    /// the message.
    ///
    /// A message sent as a BDAT chunk goes in one group with its commands,
    /// and the server may hold back every reply of the group until it has
    /// the chunk (RFC 2920). So there this bounds the wait for each reply of
    /// the group (RSET, MAIL, RCPT and BDAT), and `data_block` bounds the
    /// write of the group.
    pub data_termination: Duration,
    /// Wait for the 221 reply to QUIT. Default 10 seconds; a missing 221 is
    /// normal and only delays the close.
    pub quit: Duration,
    /// How long a ready session waits for another transaction before it
    /// reports [`ClientEvent::IdleTimeout`](super::ClientEvent::IdleTimeout).
    /// Default 5 seconds; not an RFC timeout, but how long a connection is
    /// kept open for more mail.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            banner: Duration::from_secs(5 * 60),
            ehlo: Duration::from_secs(5 * 60),
            starttls: Duration::from_secs(2 * 60),
            tls_handshake: Duration::from_secs(60),
            rset: Duration::from_secs(2 * 60),
            mail: Duration::from_secs(5 * 60),
            rcpt: Duration::from_secs(5 * 60),
            data_initiation: Duration::from_secs(2 * 60),
            data_block: Duration::from_secs(3 * 60),
            data_termination: Duration::from_secs(10 * 60),
            quit: Duration::from_secs(10),
            idle: Duration::from_secs(5),
        }
    }
}

impl Timeouts {
    /// Takes the timeouts from the engine's configuration, plus the idle
    /// timeout that the configuration keeps with the connection settings.
    pub fn from_config(config: &ec_types::Timeouts, idle: Duration) -> Self {
        Self {
            banner: config.banner,
            ehlo: config.ehlo,
            starttls: config.starttls,
            tls_handshake: config.tls_handshake,
            rset: config.rset,
            mail: config.mail,
            rcpt: config.rcpt,
            data_initiation: config.data,
            data_block: config.data_block,
            data_termination: config.data_termination,
            quit: config.quit,
            idle,
        }
    }

    /// Returns the duration of `timer`.
    pub fn get(&self, timer: Timer) -> Duration {
        match timer {
            Timer::Banner => self.banner,
            Timer::Ehlo => self.ehlo,
            Timer::StartTls => self.starttls,
            Timer::TlsHandshake => self.tls_handshake,
            Timer::Rset => self.rset,
            Timer::Mail => self.mail,
            Timer::Rcpt => self.rcpt,
            Timer::DataInitiation => self.data_initiation,
            Timer::DataBlock => self.data_block,
            Timer::DataTermination => self.data_termination,
            Timer::Quit => self.quit,
            Timer::Idle => self.idle,
        }
    }
}

/// The wait a timer bounds; one per field of [`Timeouts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// The 220 banner.
    Banner,
    /// The EHLO or HELO reply.
    Ehlo,
    /// The reply to STARTTLS.
    StartTls,
    /// The TLS handshake.
    TlsHandshake,
    /// The reply to RSET.
    Rset,
    /// The reply to MAIL.
    Mail,
    /// A RCPT reply.
    Rcpt,
    /// The 354 reply to DATA.
    DataInitiation,
    /// The write of the message data.
    DataBlock,
    /// The reply to the final dot.
    DataTermination,
    /// The reply to QUIT.
    Quit,
    /// The next transaction.
    Idle,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Banner => "wait for the banner",
            Self::Ehlo => "wait for the EHLO reply",
            Self::StartTls => "wait for the STARTTLS reply",
            Self::TlsHandshake => "TLS handshake",
            Self::Rset => "wait for the RSET reply",
            Self::Mail => "wait for the MAIL reply",
            Self::Rcpt => "wait for a RCPT reply",
            Self::DataInitiation => "wait for the DATA reply",
            Self::DataBlock => "write of the message data",
            Self::DataTermination => "wait for the reply to the final dot",
            Self::Quit => "wait for the QUIT reply",
            Self::Idle => "idle wait for the next transaction",
        })
    }
}
