//! Enhanced status codes (RFC 3463) parsed alone and split off reply text.

use ec_types::{EnhancedStatusCode, InvalidEnhancedStatusCode};

fn code(text: &str) -> EnhancedStatusCode {
    text.parse().expect("valid enhanced status code")
}

#[test]
fn split_prefix_valid_codes() {
    let cases = [
        ("2.0.0", "2.0.0", ""),
        ("2.0.0 ", "2.0.0", ""),
        ("5.7.1 relay denied", "5.7.1", "relay denied"),
        ("4.1.1  two spaces", "4.1.1", " two spaces"),
        ("5.001.010 padded", "5.1.10", "padded"),
        ("2.0.0 é ok", "2.0.0", "é ok"),
    ];
    for (text, expected, rest) in cases {
        let (parsed, tail) =
            EnhancedStatusCode::split_prefix(text).unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(parsed.to_string(), expected, "{text:?}");
        assert_eq!(tail, rest, "{text:?}");
    }
}

#[test]
fn split_prefix_rejects_non_codes() {
    for text in [
        "",
        " 2.0.0 leading space",
        "2.0",
        "2.0 ok",
        "5.7.1x",
        "5.7.1x rest",
        "5.7.1\tok",
        "3.0.0 go ahead",
        "2.0.0.0 ok",
        "2.1000.0 ok",
        "2.0.0é",
        "é 2.0.0",
        "PIPELINING",
        "mx.example.com ESMTP",
    ] {
        assert!(
            EnhancedStatusCode::split_prefix(text).is_none(),
            "{text:?} split"
        );
    }
}

#[test]
fn from_str_error_names_text() {
    for text in ["5.7.1x", "2.0", "", "4.7.1 ", "٢.0.0"] {
        let error = text
            .parse::<EnhancedStatusCode>()
            .expect_err("invalid code parsed");
        assert_eq!(error, InvalidEnhancedStatusCode(text.to_owned()));
        assert!(error.to_string().contains(&format!("{text:?}")), "{error}");
    }
}

#[test]
fn from_str_agrees_with_split_prefix() {
    for text in ["2.0.0", "4.7.1", "5.999.999", "5.01.1"] {
        let (prefix, rest) = EnhancedStatusCode::split_prefix(text).expect("valid code");
        assert_eq!(prefix, code(text), "{text:?}");
        assert_eq!(rest, "", "{text:?}");
    }
}

#[test]
fn try_from_string() {
    assert_eq!(
        EnhancedStatusCode::try_from("4.2.0".to_owned()),
        Ok(code("4.2.0"))
    );
    assert_eq!(
        EnhancedStatusCode::try_from("4.2".to_owned()),
        Err(InvalidEnhancedStatusCode("4.2".to_owned()))
    );
}
