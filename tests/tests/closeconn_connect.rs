//! A connect that fails: nothing was ever connected, so `closeconn` drops
//! the socket without QUIT or FIN, and the message goes back to its queue
//! without spending an attempt.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use ec_tests::delivery::{fault_config, submission, Run, RunResult};
use ec_types::{CloseOutcome, CloseReason};

/// Checks that every connection failed its connect, or was still
/// connecting at the shutdown, and never had a peer.
fn assert_never_connected(result: &RunResult) {
    let failed = result
        .closes
        .iter()
        .filter(|c| c.reason == CloseReason::ConnectFailed)
        .count();
    assert!(failed >= 1, "{:#?}", result.closes);
    for close in &result.closes {
        assert!(
            matches!(
                close.reason,
                CloseReason::ConnectFailed | CloseReason::Shutdown
            ),
            "{close:?}"
        );
        assert_eq!(close.outcome, CloseOutcome::NeverConnected, "{close:?}");
        assert_eq!(close.peer, None);
    }
}

#[test]
fn refused_connect_requeues() {
    // Bind, learn the port, close: nothing listens there any more.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    let to = vec!["rcpt@refused.test".to_owned()];

    let result = Run::new(fault_config("refused.test", address))
        .submit(submission(
            1,
            "sender@ec.test",
            &to,
            b"Subject: x\r\n\r\nbody\r\n",
        ))
        .domain_backoff(Duration::from_millis(200))
        .limit(Duration::from_secs(1))
        .run();

    assert_eq!(result.check_accounting(), Ok(()));
    assert_eq!(result.outcomes_of(1), ["unsent"], "{:#?}", result.records);
    assert_eq!(result.records_of(1)[0].attempts, 0);
    assert!(result.opens.len() >= 2, "retried after the backoff");
    assert_never_connected(&result);
}

#[test]
fn stalled_connect_times_out() {
    // A listener whose accept queue is full and never drained: the kernel
    // drops further SYNs, so a connect to it hangs until its timeout.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (listener, address) = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((Ipv4Addr::LOCALHOST, 0).into())
            .expect("bind a loopback port");
        let listener = socket.listen(1).expect("listen");
        let address = listener.local_addr().expect("local address");
        (listener, address)
    });
    let fillers: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(!fillers.is_empty(), "the accept queue took no connection");
    let mut config = fault_config("stalled.test", address);
    config.global.timeouts.connect = Some(Duration::from_millis(300));
    let to = vec!["rcpt@stalled.test".to_owned()];

    let result = Run::new(config)
        .submit(submission(
            1,
            "sender@ec.test",
            &to,
            b"Subject: x\r\n\r\nbody\r\n",
        ))
        .domain_backoff(Duration::from_millis(200))
        .limit(Duration::from_secs(1))
        .run();

    assert_eq!(result.check_accounting(), Ok(()));
    assert_eq!(result.outcomes_of(1), ["unsent"], "{:#?}", result.records);
    assert_never_connected(&result);
    for close in result
        .closes
        .iter()
        .filter(|c| c.reason == CloseReason::ConnectFailed)
    {
        assert!(
            close.duration >= Duration::from_millis(300),
            "gave up after {:?}",
            close.duration
        );
    }
    drop((fillers, listener));
}
