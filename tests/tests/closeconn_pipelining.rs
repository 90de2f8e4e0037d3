//! What a pipelining client puts on the wire: each command group in one
//! write, the body with its final dot in one write, and RSET only between
//! transactions. When DATA got 354 although every RCPT was rejected, only
//! a lone dot follows (RFC 2920 section 3.1). When MAIL got 5xx and the
//! rest of the group 503, no message data follows, and every recipient
//! fails once with the MAIL reply.

use std::time::Duration;

use ec_tests::delivery::{assert_settled, fault_config, retry_soon, submission, Run, Until};
use ec_tests::fault_peer::{Close, Event, FaultPeer, MidData, Response, Scenario, Verb};
use ec_types::{CloseOutcome, Submission};

const DOMAIN: &str = "pipe.test";

const BODY: &[u8] = b"Subject: pipelining\r\n\r\nfirst line\r\n.leading dot\r\nlast line\r\n";

fn message(tag: u64, recipients: usize) -> Submission {
    let to: Vec<String> = (0..recipients)
        .map(|i| format!("rcpt{tag}-{i}@{DOMAIN}"))
        .collect();
    submission(tag, "sender@ec.test", &to, BODY)
}

/// The body as it must travel: dot-stuffed, without the end-of-data mark.
const WIRE_BODY: &[u8] = b"Subject: pipelining\r\n\r\nfirst line\r\n..leading dot\r\nlast line\r\n";

#[test]
fn refused_rcpts_send_lone_dot() {
    let scenario = Scenario::builder()
        .on_nth(Verb::Rcpt, 1, Response::reply("550 5.1.1 no such user"))
        .on_nth(Verb::Rcpt, 2, Response::reply("450 4.2.1 mailbox busy"))
        .on_end_of_data(Response::reply("554 5.5.1 no valid recipients"))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");

    let result = Run::new(fault_config(DOMAIN, peer.addr()))
        .submit(message(1, 2))
        .run();

    let records = assert_settled(&result, &peer);
    let first: Vec<_> = result
        .records
        .iter()
        .filter(|r| r.recipient.as_str() == format!("rcpt1-0@{DOMAIN}"))
        .collect();
    let second: Vec<_> = result
        .records
        .iter()
        .filter(|r| r.recipient.as_str() == format!("rcpt1-1@{DOMAIN}"))
        .collect();
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(
        matches!(&first[0].outcome, ec_sched::RecipientOutcome::Failed(reply) if reply.code.as_u16() == 550),
        "{first:#?}"
    );
    assert!(
        matches!(&second[0].outcome, ec_sched::RecipientOutcome::Deferred { reply: Some(reply), .. } if reply.code.as_u16() == 450),
        "{second:#?}"
    );
    assert_eq!(second[0].attempts, 1);

    assert_eq!(
        records[0].command_groups()[1],
        [
            "MAIL FROM:<sender@ec.test>".to_owned(),
            format!("RCPT TO:<rcpt1-0@{DOMAIN}>"),
            format!("RCPT TO:<rcpt1-1@{DOMAIN}>"),
            "DATA".to_owned(),
        ]
    );
    assert_eq!(
        records[0].bodies(),
        [bytes::Bytes::new()],
        "only the final dot"
    );
    assert_eq!(result.close_outcomes(), [CloseOutcome::Clean]);
}

#[test]
fn rejected_mail_fails_group() {
    const MAIL_550: &str = "550 5.7.1 sender rejected";
    for chunking in [false, true] {
        let mut builder = Scenario::builder().on_nth(
            Verb::Mail,
            1,
            Response::reply(MAIL_550).rejects_transaction(),
        );
        if chunking {
            builder = builder.chunking();
        }
        let peer = FaultPeer::start_on_thread(builder.build()).expect("peer starts");
        let mut config = fault_config(DOMAIN, peer.addr());
        config.global.chunking = Some(chunking);

        let result = Run::new(config).submit(message(1, 2)).run();

        let records = assert_settled(&result, &peer);
        for index in 0..2 {
            let address = format!("rcpt1-{index}@{DOMAIN}");
            let described: Vec<String> = result
                .records
                .iter()
                .filter(|record| record.recipient.as_str() == address)
                .map(|record| format!("{}: {}", record.outcome.as_str(), reply_of(record)))
                .collect();
            assert_eq!(
                described,
                [format!("failed: {MAIL_550}")],
                "chunking {chunking}, {address}"
            );
        }

        let last = if chunking {
            format!("BDAT {} LAST", BODY.len())
        } else {
            "DATA".to_owned()
        };
        assert_eq!(
            records[0].command_groups()[1],
            [
                "MAIL FROM:<sender@ec.test>".to_owned(),
                format!("RCPT TO:<rcpt1-0@{DOMAIN}>"),
                format!("RCPT TO:<rcpt1-1@{DOMAIN}>"),
                last,
            ],
            "chunking {chunking}"
        );
        let sent: Vec<u8> = records[0].sent().concat();
        let sent = String::from_utf8_lossy(&sent);
        assert_eq!(
            sent.matches("503 5.5.1 Error: need MAIL command").count(),
            2,
            "chunking {chunking}: {sent}"
        );
        assert_eq!(
            sent.matches("503 5.5.1 Error: need RCPT command").count(),
            1,
            "chunking {chunking}: {sent}"
        );
        if chunking {
            assert_eq!(
                records[0].chunks().len(),
                1,
                "the chunk went with the group"
            );
        } else {
            assert!(
                records[0].bodies().is_empty(),
                "no data after a 503 to DATA"
            );
        }
        assert_eq!(result.close_outcomes(), [CloseOutcome::Clean]);
    }
}

/// Returns the reply a record carries, or `-`.
fn reply_of(record: &ec_sched::RecipientRecord) -> String {
    match &record.outcome {
        ec_sched::RecipientOutcome::Delivered(reply)
        | ec_sched::RecipientOutcome::Failed(reply) => reply.to_string(),
        ec_sched::RecipientOutcome::Deferred {
            reply: Some(reply), ..
        } => reply.to_string(),
        _ => "-".to_owned(),
    }
}

#[test]
fn rset_only_between_transactions() {
    let peer = FaultPeer::start_on_thread(Scenario::default()).expect("peer starts");
    let mut config = fault_config(DOMAIN, peer.addr());
    config.global.max_outbound_connections = Some(1);

    let result = (1..=3)
        .map(|tag| message(tag, 1))
        .fold(Run::new(config), Run::submit)
        .run();

    let records = assert_settled(&result, &peer);
    assert_eq!(result.count("delivered"), 3, "{:#?}", result.records);
    assert_eq!(result.opens.len(), 1, "one connection for all three");
    assert_eq!(
        records[0].verbs(),
        [
            Verb::Ehlo,
            Verb::Mail,
            Verb::Rcpt,
            Verb::Data,
            Verb::Rset,
            Verb::Mail,
            Verb::Rcpt,
            Verb::Data,
            Verb::Rset,
            Verb::Mail,
            Verb::Rcpt,
            Verb::Data,
            Verb::Quit
        ]
    );
    let groups = records[0].command_groups();
    assert_eq!(groups[1][0], "MAIL FROM:<sender@ec.test>");
    for group in &groups[2..4] {
        let verbs: Vec<&str> = group
            .iter()
            .map(|line| line.split([' ', ':']).next().unwrap_or(""))
            .collect();
        assert_eq!(verbs, ["RSET", "MAIL", "RCPT", "DATA"], "{groups:#?}");
    }
    assert_eq!(records[0].bodies(), [WIRE_BODY; 3]);
}

#[test]
fn body_and_dot_together() {
    // The peer closes as soon as any message data arrived, recording what
    // that first read held: with the body and its dot in one write, the
    // end-of-data mark is in it.
    let probe = Scenario::builder()
        .mid_data(MidData {
            after_bytes: 1,
            close: Close::Clean,
        })
        .build();
    let peer =
        FaultPeer::start_sequence_on_thread(vec![probe, Scenario::default()]).expect("peer starts");

    let mut config = fault_config(DOMAIN, peer.addr());
    retry_soon(&mut config);
    let result = Run::new(config)
        .submit(message(1, 2))
        .until(Until::EveryRecipientFinal)
        .limit(Duration::from_secs(10))
        .run();

    let records = assert_settled(&result, &peer);
    let first_read = records[0]
        .events
        .iter()
        .find_map(|timed| match &timed.event {
            Event::PartialBody { data, .. } => Some(data.clone()),
            _ => None,
        })
        .expect("message data arrived");
    let mut whole = WIRE_BODY.to_vec();
    whole.extend_from_slice(b".\r\n");
    assert_eq!(first_read, whole, "the body and its final dot came apart");

    // MAIL, both RCPTs and DATA came as one group.
    assert_eq!(records[0].command_groups()[1].len(), 4);
    // The peer closed after the dot without a reply: delivery unknown,
    // then delivered again on a fresh connection.
    assert_eq!(
        result.outcomes_of(1),
        [
            "delivery_unknown",
            "delivery_unknown",
            "delivered",
            "delivered"
        ]
    );
}
