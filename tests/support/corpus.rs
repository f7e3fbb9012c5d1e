//! The reader of `tests/corpus/identity-requests.txt`: one request a line,
//! `METHOD TARGET | Header: value | ... | @HTTP/1.0 | @forwards PATH`, with
//! `\xHH` escapes and `{TOKEN}` for a valid token.

const CORPUS: &str = include_str!("../corpus/identity-requests.txt");

/// One corpus line.
#[derive(Debug)]
pub struct Case {
    pub line: usize,
    pub text: &'static str,
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub version: &'static str,
    pub headers: Vec<Vec<u8>>,
    /// The one harmless path the request may reach upstream as.
    pub forwards: Option<String>,
}

fn unescape(text: &str, line: usize) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = text
                .get(i + 2..i + 4)
                .filter(|_| bytes.get(i + 1) == Some(&b'x'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("corpus line {line}: a backslash must start \\xHH"));
            out.push(hex);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Every request of the corpus.
pub fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for (index, text) in CORPUS.lines().enumerate() {
        let line = index + 1;
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = text.split(" | ");
        let request = fields.next().unwrap();
        let (method, target) = request
            .split_once(' ')
            .unwrap_or_else(|| panic!("corpus line {line}: expected METHOD TARGET"));
        assert!(
            !target.contains(' '),
            "corpus line {line}: write spaces in the target as \\x20"
        );
        let mut case = Case {
            line,
            text,
            method: unescape(method, line),
            target: unescape(target, line),
            version: "HTTP/1.1",
            headers: Vec::new(),
            forwards: None,
        };
        for field in fields {
            if field == "@HTTP/1.0" {
                case.version = "HTTP/1.0";
            } else if let Some(path) = field.strip_prefix("@forwards ") {
                case.forwards = Some(path.to_string());
            } else {
                assert!(
                    !field.starts_with('@') && field.contains(':'),
                    "corpus line {line}: unknown field {field:?}"
                );
                case.headers.push(unescape(field, line));
            }
        }
        cases.push(case);
    }
    cases
}

impl Case {
    /// The request as a client writes it, with `{TOKEN}` filled in.
    pub fn bytes(&self, token: &str) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.method);
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.push(b' ');
        out.extend_from_slice(self.version.as_bytes());
        out.extend_from_slice(b"\r\n");
        let has_host = self
            .headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with(b"host:"));
        if !has_host && self.version == "HTTP/1.1" {
            out.extend_from_slice(b"Host: 169.254.169.254\r\n");
        }
        for header in &self.headers {
            let header = String::from_utf8_lossy(header).replace("{TOKEN}", token);
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out
    }
}
