//! Responses the edge writes itself: JSON errors (`{"error": "..."}`) and small helpers for
//! headers every authorised response carries.

use super::cors::Cors;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// The header that hands a viewer their current token (seed behaviour).
pub const NEW_TOKEN: &str = "X-New-Token";

/// A header name as the edge writes it: `titled` into a Pingora header (which keeps its
/// names' case), `name` straight into the map of plain `http` parts (the answers made from
/// a cached object's kept header, see `EdgeProxy::hit_template`: Pingora's `insert_header`
/// parses the name back from its bytes on every call and keeps a second map of the case).
pub struct Field {
    pub titled: &'static str,
    pub name: HeaderName,
}

impl Field {
    pub const fn new(titled: &'static str, lower: &'static str) -> Field {
        Field {
            titled,
            name: HeaderName::from_static(lower),
        }
    }

    /// Set this header to `value`.
    pub fn set(&self, h: &mut impl Fields, value: HeaderValue) -> pingora_error::Result<()> {
        h.put(self, value, false)
    }

    /// Add `value` to this header's values.
    pub fn add(&self, h: &mut impl Fields, value: HeaderValue) -> pingora_error::Result<()> {
        h.put(self, value, true)
    }
}

/// A response header the edge adds [`Field`]s to.
pub trait Fields {
    fn put(&mut self, f: &Field, value: HeaderValue, add: bool) -> pingora_error::Result<()>;
}

impl Fields for ResponseHeader {
    fn put(&mut self, f: &Field, value: HeaderValue, add: bool) -> pingora_error::Result<()> {
        if add {
            self.append_header(f.titled, value).map(|_| ())
        } else {
            self.insert_header(f.titled, value)
        }
    }
}

impl Fields for http::response::Parts {
    fn put(&mut self, f: &Field, value: HeaderValue, add: bool) -> pingora_error::Result<()> {
        if add {
            self.headers.append(f.name.clone(), value);
        } else {
            self.headers.insert(f.name.clone(), value);
        }
        Ok(())
    }
}

/// `X-New-Token` as a [`Field`].
pub const NEW_TOKEN_FIELD: Field = Field::new(NEW_TOKEN, "x-new-token");

/// Write a complete JSON error response. Content-Length is always set so the connection can
/// be reused.
pub async fn error(
    session: &mut Session,
    status: u16,
    message: &str,
    cors: &Cors,
) -> pingora_error::Result<()> {
    let body = json_error_body(message);
    let h = error_header(status, body.len(), cors)?;
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(h), head).await?;
    if !head {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// The header of a JSON error of `len` bytes.
pub fn error_header(status: u16, len: usize, cors: &Cors) -> pingora_error::Result<ResponseHeader> {
    let mut h = ResponseHeader::build(status, Some(5))?;
    h.insert_header("Content-Type", "application/json")?;
    h.insert_header("Content-Length", len.to_string())?;
    h.insert_header("Cache-Control", "no-store")?;
    if status == 429 {
        // The bounds the edge answers 429 for are per second.
        h.insert_header("Retry-After", "1")?;
    }
    cors.apply(&mut h)?;
    Ok(h)
}

/// `{"error": message}` as bytes.
pub fn json_error_body(message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 16);
    body.extend_from_slice(b"{\"error\":");
    json_string(message, &mut body);
    body.extend_from_slice(b"}");
    body
}

fn json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_escapes() {
        assert_eq!(
            super::json_error_body("a \"b\" \\ \n"),
            br#"{"error":"a \"b\" \\ \u000a"}"#
        );
    }
}
