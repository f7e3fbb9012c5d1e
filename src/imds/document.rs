//! Response bodies in the exact shapes IMDS uses.
//!
//! Every body is `text/plain` whatever the client's `Accept` says, as on EC2:
//! the Go SDK breaks on a JSON-typed credentials document.

use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};

use crate::credentials::sts::Credentials;
use crate::roles::RoleArn;
use crate::time::timestamp;

/// A `text/plain` 200 with `body` exactly as given (no trailing newline:
/// aws-config uses the role listing verbatim as a URL segment).
pub fn text(body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The error page IMDS itself sends: a fixed body, never internal detail.
pub fn status_page(status: StatusCode) -> Response<Full<Bytes>> {
    let title = format!(
        "{} - {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
         <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
         \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
         <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n </body>\n</html>\n"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The credentials document, with `AccountId` on the extended route,
/// rendered once per credentials and then shared.
pub fn credentials(credentials: &Credentials, account: Option<&str>) -> Response<Full<Bytes>> {
    text(credentials_body(credentials, account))
}

/// The body of [`credentials`], rendered once per credentials and flavour.
pub fn credentials_body(credentials: &Credentials, account: Option<&str>) -> Bytes {
    let cell = match account {
        None => &credentials.rendered.legacy,
        Some(_) => &credentials.rendered.extended,
    };
    cell.get_or_init(|| render_credentials(credentials, account))
        .clone()
}

fn render_credentials(credentials: &Credentials, account: Option<&str>) -> Bytes {
    let mut body = String::with_capacity(1400);
    body.push_str("{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"");
    body.push_str(&timestamp(credentials.last_updated));
    body.push_str("\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : ");
    body.push_str(&json_string(&credentials.access_key_id));
    body.push_str(",\n  \"SecretAccessKey\" : ");
    body.push_str(&json_string(credentials.secret_access_key.expose()));
    body.push_str(",\n  \"Token\" : ");
    body.push_str(&json_string(credentials.session_token.expose()));
    body.push_str(",\n  \"Expiration\" : \"");
    body.push_str(&timestamp(credentials.expiration));
    body.push('"');
    if let Some(account) = account {
        body.push_str(",\n  \"AccountId\" : ");
        body.push_str(&json_string(account));
    }
    body.push_str("\n}");
    // Kept for the credentials' lifetime, one per container session.
    body.shrink_to_fit();
    Bytes::from(body)
}

/// `iam/info` for the container's role, shaped like an instance profile's.
/// The profile ID is derived from the ARN so it is stable across restarts.
pub fn iam_info(arn: &RoleArn, now: SystemTime) -> Response<Full<Bytes>> {
    let profile_arn = arn.as_str().replacen(":role/", ":instance-profile/", 1);
    let digest = Sha256::digest(arn.as_str().as_bytes());
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = digest
        .iter()
        .take(17)
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect();
    text(format!(
        "{{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"{}\",\n  \"InstanceProfileArn\" : {},\n  \"InstanceProfileId\" : \"AIPA{id}\"\n}}",
        timestamp(now),
        json_string(&profile_arn),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::sts::Secret;
    use http_body_util::BodyExt;
    use std::time::{Duration, UNIX_EPOCH};

    async fn body(response: Response<Full<Bytes>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn credentials_document_is_exactly_what_imds_sends() {
        let creds = Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: Secret::new("se\"cret"),
            session_token: Secret::new("tok"),
            expiration: UNIX_EPOCH + Duration::from_secs(1_795_381_200),
            last_updated: UNIX_EPOCH + Duration::from_secs(1_795_377_600),
            rendered: Default::default(),
        };
        let expected = "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2026-11-22T20:00:00Z\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIAEXAMPLE\",\n  \"SecretAccessKey\" : \"se\\\"cret\",\n  \"Token\" : \"tok\",\n  \"Expiration\" : \"2026-11-22T21:00:00Z\"\n}";
        assert_eq!(body(credentials(&creds, None)).await, expected);
        let extended = body(credentials(&creds, Some("123456789012"))).await;
        assert!(extended.ends_with(
            "\"Expiration\" : \"2026-11-22T21:00:00Z\",\n  \"AccountId\" : \"123456789012\"\n}"
        ));
        let parsed: serde_json::Value = serde_json::from_str(&extended).unwrap();
        assert_eq!(parsed["SecretAccessKey"], "se\"cret");
    }

    #[tokio::test]
    async fn iam_info_names_the_containers_role() {
        let arn = RoleArn::parse("arn:aws:iam::123456789012:role/team/Web").unwrap();
        let info = body(iam_info(&arn, UNIX_EPOCH)).await;
        let parsed: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(parsed["Code"], "Success");
        assert_eq!(
            parsed["InstanceProfileArn"],
            "arn:aws:iam::123456789012:instance-profile/team/Web"
        );
        assert_eq!(parsed["InstanceProfileId"].as_str().unwrap().len(), 21);
    }
}
