//! AWS Signature Version 4 verification, pure: no I/O, no clock, no store.
//!
//! [`SignedRequest::parse`] reads the `Authorization` header (bounded
//! lengths), checks `X-Amz-Date` against the caller's clock (15 minutes
//! either way), refuses `X-Amz-Security-Token` (berth issues no session
//! credentials), checks `x-amz-content-sha256` against the body when it is
//! sent, and builds the canonical request and the string to sign.
//! [`SignedRequest::verify`] derives the signing key from the secret for
//! the request's date, region and service and compares the signature in
//! constant time (`ring::hmac::verify`).
//!
//! Invariants:
//! - every length from the request is bounded before it is used;
//! - `host` and `x-amz-date` must be among the signed headers;
//! - no secret, signing key or signature is in an error message.

use ring::hmac;
use sha2::{Digest, Sha256};

/// The only algorithm SigV4 defines for HMAC-SHA256.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far `X-Amz-Date` may be from the server's clock (AWS: 15 minutes).
pub const MAX_SKEW_SECS: i64 = 15 * 60;
/// Longest `Authorization` header accepted.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Most headers a request may sign.
pub const MAX_SIGNED_HEADERS: usize = 64;
/// Longest access key id, region or service in a credential scope.
pub const MAX_SCOPE_PART_LEN: usize = 128;
/// Longest path plus query string canonicalised.
pub const MAX_TARGET_LEN: usize = 8192;

/// Why a request's signature is refused. Messages name what is wrong and
/// never hold a secret or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error(
        "the request is not signed: no Authorization header (sign it with AWS Signature Version 4 and a berth access key)"
    )]
    Missing,
    #[error("the Authorization header is malformed: {0}")]
    Malformed(String),
    #[error(
        "session tokens are not supported: berth issues access keys without a session token (X-Amz-Security-Token); use `berth access-key create`"
    )]
    SessionToken,
    #[error("{0}")]
    Date(String),
    #[error("x-amz-content-sha256 does not match the body's SHA-256")]
    ContentHash,
    #[error("the credential scope is for service {0}, this endpoint is {1}")]
    WrongService(String, String),
    #[error(
        "the request signature does not match: check the secret access key and the signing method"
    )]
    Mismatch,
}

impl SigV4Error {
    /// The ECS exception name AWS answers with (HTTP 403 for all).
    pub fn exception(&self) -> &'static str {
        match self {
            SigV4Error::Missing => "MissingAuthenticationTokenException",
            SigV4Error::SessionToken => "UnrecognizedClientException",
            _ => "InvalidSignatureException",
        }
    }
}

/// The parts of an HTTP request that SigV4 signs. Header names in any case;
/// a name repeated is one header with the values joined by `,`.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The path as sent on the wire (percent-encoded), without the query.
    pub path: &'a str,
    /// The query string as sent, without `?`; empty when there is none.
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// The `Authorization` header's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower case, in the order given (which must be sorted).
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

/// A request whose signature can be checked once its access key's secret
/// is known.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub authorization: Authorization,
    /// The string to sign, built from the request.
    string_to_sign: String,
}

fn malformed(what: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(what.into())
}

fn scope_part(what: &str, value: &str) -> Result<String, SigV4Error> {
    if value.is_empty() || value.len() > MAX_SCOPE_PART_LEN {
        return Err(malformed(format!(
            "the credential's {what} must be 1-{MAX_SCOPE_PART_LEN} characters"
        )));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(malformed(format!(
            "the credential's {what} may hold letters, digits, '-' and '_' only"
        )));
    }
    Ok(value.to_owned())
}

/// Parses `AWS4-HMAC-SHA256 Credential=ID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=HEX`.
pub fn parse_authorization(header: &str) -> Result<Authorization, SigV4Error> {
    if header.len() > MAX_AUTHORIZATION_LEN {
        return Err(malformed(format!(
            "it is {} bytes, at most {MAX_AUTHORIZATION_LEN} are accepted",
            header.len()
        )));
    }
    let rest = header
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| malformed(format!("the algorithm must be {ALGORITHM}")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| malformed("expected Credential=, SignedHeaders= and Signature="))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(malformed(format!("unknown component {key:.32}"))),
        };
        if slot.replace(value).is_some() {
            return Err(malformed(format!("{key} is given twice")));
        }
    }
    let credential = credential.ok_or_else(|| malformed("Credential= is missing"))?;
    let signed = signed.ok_or_else(|| malformed("SignedHeaders= is missing"))?;
    let signature = signature.ok_or_else(|| malformed("Signature= is missing"))?;

    let parts: Vec<&str> = credential.split('/').collect();
    let [id, date, region, service, terminator] = parts[..] else {
        return Err(malformed(
            "Credential= must be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    };
    if terminator != "aws4_request" {
        return Err(malformed("the credential scope must end in aws4_request"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the credential's date must be YYYYMMDD"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    if signed_headers.len() > MAX_SIGNED_HEADERS {
        return Err(malformed(format!(
            "{} signed headers, at most {MAX_SIGNED_HEADERS} are accepted",
            signed_headers.len()
        )));
    }
    if signed_headers.iter().any(|h| {
        h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    }) {
        return Err(malformed(
            "SignedHeaders= must list lower-case header names separated by ';'",
        ));
    }
    if signed_headers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(malformed(
            "SignedHeaders= must be sorted and without repeats",
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !signed_headers.iter().any(|h| h == required) {
            return Err(malformed(format!("the {required} header must be signed")));
        }
    }
    let mut sig = [0u8; 32];
    if signature.len() != 64 || hex::decode_to_slice(signature, &mut sig).is_err() {
        return Err(malformed("Signature= must be 64 hex digits"));
    }
    Ok(Authorization {
        access_key_id: scope_part("access key id", id)?,
        date: date.to_owned(),
        region: scope_part("region", region)?,
        service: scope_part("service", service)?,
        signed_headers,
        signature: sig,
    })
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the Unix epoch.
pub fn parse_amz_date(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = value.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let month = time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(digits(0..4)?).ok()?,
        month,
        u8::try_from(digits(6..8)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(digits(9..11)?).ok()?,
        u8::try_from(digits(11..13)?).ok()?,
        u8::try_from(digits(13..15)?).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn single_header<'a>(headers: &'a [(String, String)], name: &'a str) -> Option<&'a str> {
    header_values(headers, name).next()
}

/// Trims a header value and folds runs of spaces into one.
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 3986 percent-encoding of everything but the unreserved characters
/// (and `/` when `keep_slash`).
fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    fn hex_digit(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_digit(b[i + 1]), hex_digit(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(&percent_decode(k), false, &mut ek);
            uri_encode(&percent_decode(v), false, &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The canonical request for the headers `signed` (lower case, sorted).
pub fn canonical_request(req: &HttpRequest<'_>, signed: &[String]) -> Result<String, SigV4Error> {
    if req.path.len() + req.query.len() > MAX_TARGET_LEN {
        return Err(malformed(format!(
            "the request target is longer than {MAX_TARGET_LEN} bytes"
        )));
    }
    let mut out = String::new();
    out.push_str(req.method);
    out.push('\n');
    let path = if req.path.is_empty() { "/" } else { req.path };
    uri_encode(path.as_bytes(), true, &mut out);
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed {
        let values: Vec<String> = header_values(req.headers, name)
            .map(canonical_value)
            .collect();
        if values.is_empty() {
            return Err(malformed(format!(
                "the signed header {name} is not in the request"
            )));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed.join(";"));
    out.push('\n');
    out.push_str(&sha256_hex(req.body));
    Ok(out)
}

/// The string to sign for a request at `amz_date` in `scope`
/// (`DATE/REGION/SERVICE/aws4_request`).
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The signing key: HMAC chained over date, region, service and
/// `aws4_request`, starting from `AWS4` + the secret.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut key = hmac::Key::new(hmac::HMAC_SHA256, format!("AWS4{secret}").as_bytes());
    for part in [date, region, service, "aws4_request"] {
        let tag = hmac::sign(&key, part.as_bytes());
        key = hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref());
    }
    key
}

impl SignedRequest {
    /// Reads and checks everything but the signature itself. `now_secs`
    /// is the server's clock; `service` the one this endpoint answers for.
    pub fn parse(req: &HttpRequest<'_>, now_secs: i64, service: &str) -> Result<Self, SigV4Error> {
        if single_header(req.headers, "x-amz-security-token").is_some() {
            return Err(SigV4Error::SessionToken);
        }
        let header = single_header(req.headers, "authorization").ok_or(SigV4Error::Missing)?;
        let authorization = parse_authorization(header)?;
        if authorization.service != service {
            return Err(SigV4Error::WrongService(
                authorization.service.clone(),
                service.to_owned(),
            ));
        }
        let amz_date = single_header(req.headers, "x-amz-date")
            .ok_or_else(|| SigV4Error::Date("the X-Amz-Date header is missing".to_owned()))?;
        let at = parse_amz_date(amz_date).ok_or_else(|| {
            SigV4Error::Date(format!("X-Amz-Date {amz_date:.32} is not YYYYMMDDTHHMMSSZ"))
        })?;
        if amz_date.get(..8) != Some(authorization.date.as_str()) {
            return Err(SigV4Error::Date(
                "the credential's date is not the day of X-Amz-Date".to_owned(),
            ));
        }
        if (at - now_secs).abs() > MAX_SKEW_SECS {
            return Err(SigV4Error::Date(format!(
                "X-Amz-Date {amz_date} is more than {} minutes from the server's clock (signature expired or not yet valid)",
                MAX_SKEW_SECS / 60
            )));
        }
        if let Some(claimed) = single_header(req.headers, "x-amz-content-sha256") {
            let actual = sha256_hex(req.body);
            if !claimed.eq_ignore_ascii_case(&actual) && claimed != "UNSIGNED-PAYLOAD" {
                return Err(SigV4Error::ContentHash);
            }
        }
        let canonical = canonical_request(req, &authorization.signed_headers)?;
        let scope = format!(
            "{}/{}/{}/aws4_request",
            authorization.date, authorization.region, authorization.service
        );
        Ok(SignedRequest {
            string_to_sign: string_to_sign(amz_date, &scope, &canonical),
            authorization,
        })
    }

    /// Checks the signature with the access key's secret, in constant time.
    pub fn verify(&self, secret: &str) -> Result<(), SigV4Error> {
        let a = &self.authorization;
        let key = signing_key(secret, &a.date, &a.region, &a.service);
        hmac::verify(&key, self.string_to_sign.as_bytes(), &a.signature)
            .map_err(|_| SigV4Error::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The AWS SigV4 test suite's credentials and time.
    const ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn now() -> i64 {
        parse_amz_date(DATE).expect("date")
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn auth(signed: &str, sig: &str) -> String {
        format!(
            "{ALGORITHM} Credential={ID}/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={sig}"
        )
    }

    fn check(
        method: &str,
        path: &str,
        query: &str,
        mut hs: Vec<(String, String)>,
        body: &[u8],
        signed: &str,
        sig: &str,
    ) -> Result<(), SigV4Error> {
        hs.push(("Authorization".to_owned(), auth(signed, sig)));
        let req = HttpRequest {
            method,
            path,
            query,
            headers: &hs,
            body,
        };
        SignedRequest::parse(&req, now(), "service")?.verify(SECRET)
    }

    const GET_VANILLA: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    fn vanilla_headers() -> Vec<(String, String)> {
        headers(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)])
    }

    #[test]
    fn get_vanilla_matches_the_aws_suite() {
        let hs = vanilla_headers();
        let req = HttpRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &hs,
            body: b"",
        };
        let signed = vec!["host".to_owned(), "x-amz-date".to_owned()];
        assert_eq!(
            canonical_request(&req, &signed).expect("canonical"),
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        check(
            "GET",
            "/",
            "",
            vanilla_headers(),
            b"",
            "host;x-amz-date",
            GET_VANILLA,
        )
        .expect("valid");
    }

    #[test]
    fn get_vanilla_query_order_key_case_matches_the_aws_suite() {
        check(
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            vanilla_headers(),
            b"",
            "host;x-amz-date",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        )
        .expect("valid");
    }

    #[test]
    fn post_x_www_form_urlencoded_matches_the_aws_suite() {
        let mut hs = vanilla_headers();
        hs.push((
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ));
        check(
            "POST",
            "/",
            "",
            hs,
            b"Param1=value1",
            "content-type;host;x-amz-date",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        )
        .expect("valid");
    }

    #[test]
    fn an_ecs_json_request_signed_by_botocore_verifies() {
        // Signed with botocore.auth.SigV4Auth (service ecs, us-east-1).
        let mut hs = vanilla_headers();
        hs.push((
            "Content-Type".to_owned(),
            "application/x-amz-json-1.1".to_owned(),
        ));
        hs.push((
            "X-Amz-Target".to_owned(),
            "AmazonEC2ContainerServiceV20141113.ListClusters".to_owned(),
        ));
        hs.push((
            "Authorization".to_owned(),
            format!("{ALGORITHM} Credential={ID}/20150830/us-east-1/ecs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=b63e874729e484f9cfbdfbc63e1366f25f1444895951547d6104204fd80d90ce"),
        ));
        let req = HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &hs,
            body: b"{}",
        };
        let signed = SignedRequest::parse(&req, now(), "ecs").expect("parse");
        assert_eq!(signed.authorization.access_key_id, ID);
        signed.verify(SECRET).expect("valid");
        assert_eq!(signed.verify("another secret"), Err(SigV4Error::Mismatch));
        assert_eq!(
            SignedRequest::parse(&req, now(), "service").map(|_| ()),
            Err(SigV4Error::WrongService(
                "ecs".to_owned(),
                "service".to_owned()
            ))
        );
    }

    #[test]
    fn a_changed_body_header_or_signature_is_a_mismatch() {
        let mut hs = vanilla_headers();
        hs.push((
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ));
        let sig = "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a";
        let signed = "content-type;host;x-amz-date";
        assert_eq!(
            check("POST", "/", "", hs.clone(), b"Param1=value2", signed, sig),
            Err(SigV4Error::Mismatch)
        );
        let mut other = hs.clone();
        other[0].1 = "other.example.com".to_owned();
        assert_eq!(
            check("POST", "/", "", other, b"Param1=value1", signed, sig),
            Err(SigV4Error::Mismatch)
        );
        let bad = sig.replace("ff11", "ff12");
        assert_eq!(
            check("POST", "/", "", hs, b"Param1=value1", signed, &bad),
            Err(SigV4Error::Mismatch)
        );
    }

    #[test]
    fn the_clock_skew_window_is_fifteen_minutes() {
        let hs = {
            let mut h = vanilla_headers();
            h.push((
                "Authorization".to_owned(),
                auth("host;x-amz-date", GET_VANILLA),
            ));
            h
        };
        let req = HttpRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &hs,
            body: b"",
        };
        for offset in [-MAX_SKEW_SECS, MAX_SKEW_SECS] {
            SignedRequest::parse(&req, now() + offset, "service").expect("inside the window");
        }
        for offset in [-MAX_SKEW_SECS - 1, MAX_SKEW_SECS + 1] {
            let err = SignedRequest::parse(&req, now() + offset, "service").expect_err("outside");
            assert!(
                matches!(err, SigV4Error::Date(ref m) if m.contains("15 minutes")),
                "{err}"
            );
            assert_eq!(err.exception(), "InvalidSignatureException");
        }
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let run = |extra: &[(&str, &str)], authz: Option<String>, body: &[u8]| {
            let mut hs = vanilla_headers();
            hs.extend(headers(extra));
            if let Some(a) = authz {
                hs.push(("Authorization".to_owned(), a));
            }
            let req = HttpRequest {
                method: "GET",
                path: "/",
                query: "",
                headers: &hs,
                body,
            };
            SignedRequest::parse(&req, now(), "service").map(|_| ())
        };
        let good = Some(auth("host;x-amz-date", GET_VANILLA));
        assert_eq!(run(&[], None, b""), Err(SigV4Error::Missing));
        assert_eq!(
            run(&[], None, b"").expect_err("refused").exception(),
            "MissingAuthenticationTokenException"
        );
        let token = run(&[("X-Amz-Security-Token", "t")], good.clone(), b"").expect_err("refused");
        assert_eq!(token, SigV4Error::SessionToken);
        assert!(token.to_string().contains("X-Amz-Security-Token"));
        assert_eq!(token.exception(), "UnrecognizedClientException");
        assert_eq!(
            run(&[("x-amz-content-sha256", "00")], good.clone(), b""),
            Err(SigV4Error::ContentHash)
        );
        run(
            &[(
                "x-amz-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )],
            good,
            b"",
        )
        .expect("a matching content hash");
        let malformed_cases = [
            ("AWS4-HMAC-SHA1 Credential=a", "algorithm"),
            (
                &*format!(
                    "{ALGORITHM} Credential={ID}/20150830/us-east-1/service/aws4_request, Signature={GET_VANILLA}"
                ),
                "SignedHeaders",
            ),
            (
                &*auth("host", GET_VANILLA),
                "x-amz-date header must be signed",
            ),
            (&*auth("x-amz-date;host", GET_VANILLA), "sorted"),
            (&*auth("host;x-amz-date", "abc"), "64 hex"),
            (
                &*auth("host;x-amz-date;x-other", GET_VANILLA),
                "x-other is not in the request",
            ),
            (
                &*format!(
                    "{ALGORITHM} Credential={ID}/2015/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={GET_VANILLA}"
                ),
                "YYYYMMDD",
            ),
            (
                &*format!(
                    "{ALGORITHM} Credential={ID}/20150830/us-east-1/service, SignedHeaders=host;x-amz-date, Signature={GET_VANILLA}"
                ),
                "Credential=",
            ),
            (
                &*format!(
                    "{ALGORITHM} Credential={ID}/20150831/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={GET_VANILLA}"
                ),
                "day of X-Amz-Date",
            ),
        ];
        for (header, expect) in malformed_cases {
            let err = run(&[], Some(header.to_owned()), b"").expect_err(header);
            assert!(err.to_string().contains(expect), "{header}: {err}");
            assert!(!err.to_string().contains(GET_VANILLA), "{err}");
        }
        let long = format!(
            "{ALGORITHM} Credential={}",
            "a".repeat(MAX_AUTHORIZATION_LEN)
        );
        assert!(
            run(&[], Some(long), b"")
                .expect_err("refused")
                .to_string()
                .contains("at most 4096")
        );
        let many = (0..=MAX_SIGNED_HEADERS)
            .map(|i| format!("h{i:03}"))
            .collect::<Vec<_>>()
            .join(";");
        assert!(
            run(&[], Some(auth(&many, GET_VANILLA)), b"")
                .expect_err("refused")
                .to_string()
                .contains("at most 64")
        );
    }

    #[test]
    fn amz_dates_parse_strictly() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        for bad in [
            "",
            "20150830T123600",
            "20151330T123600Z",
            "2015083OT123600Z",
            "20150830T246000Z",
            "+0150830T123600Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }
}
