//! The EHLO capability parser on whatever replies arbitrary bytes make.

use ec_types::Reply;

use crate::proto::capabilities::KNOWN_KEYWORDS;
use crate::proto::command::{Command, CommandError, MailParameters};
use crate::proto::{Capabilities, MessageInfo, ReplyParser};

/// Parses the input as server replies with the default limits and reads
/// each reply with [`Capabilities::from_ehlo`] and
/// [`Capabilities::from_helo`], whatever its code.
///
/// # Panics
///
/// Panics when the SIZE fields disagree with the last `SIZE` line of the
/// reply. RFC 1870 makes the first parameter the maximum, and 0 or no
/// parameter means no fixed maximum. Also panics when MAIL negotiation
/// rejects a message of exactly that maximum or accepts one octet more, when
/// a keyword or AUTH mechanism is not upper case or is stored twice, or when
/// [`Capabilities::offers`] denies a keyword that was stored.
pub fn check_ehlo(input: &[u8]) {
    let mut parser = ReplyParser::default();
    if parser.push(input).is_err() {
        // More than the parser's buffer; the reply parser target covers it.
        return;
    }

    while let Ok(Some(reply)) = parser.next_reply() {
        let capabilities = Capabilities::from_ehlo(&reply);
        check_size(&reply, &capabilities);
        check_keywords(&capabilities);
        let _ = Capabilities::from_helo(&reply);
    }
}

/// Checks SIZE against an independent reading of the reply and against MAIL
/// negotiation.
fn check_size(reply: &Reply, capabilities: &Capabilities) {
    let mut offered = false;
    let mut expected = None;
    for line in reply.lines.iter().skip(1) {
        let mut words = line.split_ascii_whitespace();
        if !words
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case("SIZE"))
        {
            continue;
        }
        offered = true;
        expected = words
            .next()
            .and_then(|param| param.parse::<u64>().ok())
            .filter(|&max| max > 0);
    }
    assert_eq!(capabilities.size, offered, "SIZE offered in {reply:?}");
    assert_eq!(
        capabilities.max_message_size, expected,
        "SIZE maximum of {reply:?}"
    );

    let Some(max) = capabilities.max_message_size else {
        return;
    };
    let params = match negotiate(capabilities, max) {
        Ok(params) => params,
        Err(error) => panic!("a message of exactly the SIZE maximum {max} was rejected: {error}"),
    };
    if let Some(over) = max.checked_add(1) {
        assert_eq!(
            negotiate(capabilities, over),
            Err(CommandError::MessageTooLarge { size: over, max }),
            "a message over the SIZE maximum was not rejected"
        );
    }

    let mail = Command::Mail {
        reverse_path: "sender@example.org",
        params,
    };
    let encoded = mail.to_bytes().expect("MAIL with SIZE encodes");
    let expected_param = format!(" SIZE={max}");
    assert!(
        encoded
            .windows(expected_param.len())
            .any(|window| window == expected_param.as_bytes()),
        "MAIL {:?} lacks {expected_param:?}",
        String::from_utf8_lossy(&encoded)
    );
}

fn negotiate(capabilities: &Capabilities, size: u64) -> Result<MailParameters, CommandError> {
    let message = MessageInfo {
        size,
        ..MessageInfo::default()
    };
    MailParameters::negotiate(
        capabilities,
        "sender@example.org",
        &["rcpt@example.com"],
        &message,
    )
}

fn check_keywords(capabilities: &Capabilities) {
    for extension in &capabilities.other {
        let keyword = &extension.keyword;
        assert_eq!(
            *keyword,
            keyword.to_ascii_uppercase(),
            "keyword not upper case"
        );
        assert!(!keyword.is_empty(), "empty keyword stored");
        assert!(
            !KNOWN_KEYWORDS.contains(&keyword.as_str()),
            "{keyword} stored as an unknown extension"
        );
        assert!(capabilities.offers(keyword), "offers({keyword:?}) is false");
        assert!(
            capabilities.offers(&keyword.to_ascii_lowercase()),
            "offers() depends on case for {keyword:?}"
        );
    }

    for (index, mechanism) in capabilities.auth.iter().enumerate() {
        assert!(!mechanism.is_empty(), "empty AUTH mechanism");
        assert_eq!(
            *mechanism,
            mechanism.to_ascii_uppercase(),
            "AUTH mechanism not upper case"
        );
        assert!(
            !capabilities.auth[..index].contains(mechanism),
            "AUTH mechanism {mechanism} stored twice"
        );
    }
}
