//! Provider endpoints carry API keys in the URL path, query, user info and headers. These types
//! hold them so that no `Debug`, `Display` or error path can print them by accident.

use std::fmt;

use reqwest::header::HeaderMap;
use url::Url;

/// A provider URL whose `Display`/`Debug` show only scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Url);

impl SecretUrl {
    /// Wraps a URL that has already been checked to be `http`/`https` with a host.
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    /// The full URL, for the HTTP client only.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// Every piece of this URL that may be a secret, for removing from text a provider echoes
    /// back: each path segment and query value (as written and decoded), the user and password
    /// (as written and decoded) and the Basic credential the HTTP client makes of them
    /// (base64 of `user:password`, padded and not). Path and query pieces shorter than
    /// [`MIN_GUESSED_SECRET`] are left out.
    pub fn secret_parts(&self) -> Vec<String> {
        let url = &self.0;
        let mut parts = Vec::new();
        let mut guessed = |raw: &str| {
            for piece in [raw.to_owned(), percent_decoded(raw)] {
                if piece.chars().count() >= MIN_GUESSED_SECRET {
                    parts.push(piece);
                }
            }
        };
        url.path_segments()
            .into_iter()
            .flatten()
            .for_each(&mut guessed);
        url.query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('=').map(|(_, value)| value))
            .for_each(&mut guessed);
        let user = percent_decoded(url.username());
        let password = url.password().map(percent_decoded);
        if !user.is_empty() || password.is_some() {
            let credential = format!("{user}:{}", password.as_deref().unwrap_or(""));
            let basic = base64_unpadded(credential.as_bytes());
            let padding = "=".repeat((4 - basic.len() % 4) % 4);
            parts.push(format!("{basic}{padding}"));
            parts.push(basic);
            parts.push(url.username().to_owned());
            parts.push(user);
            if let Some(password) = password {
                parts.extend(url.password().map(str::to_owned));
                parts.push(password);
            }
        }
        parts.retain(|p| !p.is_empty());
        parts
    }
}

/// Path segments and query values shorter than this are not treated as secrets: no key is that
/// short, and hiding every `v1` or `1` would shred the text they are removed from.
const MIN_GUESSED_SECRET: usize = 3;

/// `%XX` sequences decoded; the text as written when it does not decode to UTF-8.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 without `=` padding.
fn base64_unpadded(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Standard base64, padded or not; `None` if `text` is not base64.
fn base64_decoded(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, digit) in chunk.iter().enumerate() {
            let value = BASE64.iter().position(|b| b == digit)? as u32;
            n |= value << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// For a URL given outside the config file (a command-line override).
impl From<Url> for SecretUrl {
    fn from(url: Url) -> Self {
        Self(url)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.0.scheme(),
            self.0.host_str().unwrap_or("?")
        )?;
        if let Some(port) = self.0.port() {
            write!(f, ":{port}")?;
        }
        f.write_str("/<redacted>")
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Extra request headers (tokens); `Display` lists their names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretHeaders(HeaderMap);

impl SecretHeaders {
    /// What is shown in place of each value.
    pub const REDACTED: &'static str = "<redacted>";

    /// Wraps validated headers; every value is marked sensitive for the HTTP stack too.
    pub fn new(mut headers: HeaderMap) -> Self {
        for value in headers.values_mut() {
            value.set_sensitive(true);
        }
        Self(headers)
    }

    /// The headers with their values, for the HTTP client only.
    pub fn expose(&self) -> &HeaderMap {
        &self.0
    }

    /// Every value, for removing from text a provider echoes back: each value whole, each of its
    /// words but an authorization scheme (the token of `Bearer TOKEN`, not `Bearer`), and for
    /// `Basic` credentials the decoded `user:password` and its two halves. Pieces shorter than
    /// [`MIN_GUESSED_SECRET`] are left out: a header `2` must not shred every error text.
    pub fn secret_parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        for value in self.0.values() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            let words: Vec<&str> = value.split_whitespace().collect();
            if let [scheme, credential] = words[..] {
                if scheme.eq_ignore_ascii_case("basic") {
                    let decoded = base64_decoded(credential)
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                    if let Some(decoded) = decoded {
                        if let Some((user, password)) = decoded.split_once(':') {
                            parts.extend([user.to_owned(), password.to_owned()]);
                        }
                        parts.push(decoded);
                    }
                }
            }
            let credentials = match words[..] {
                [_scheme, _credential] => &words[1..],
                _ => &words[..],
            };
            parts.extend(credentials.iter().map(|w| (*w).to_owned()));
            parts.push(value);
        }
        parts.retain(|p| p.chars().count() >= MIN_GUESSED_SECRET);
        parts
    }
}

impl fmt::Display for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{ ")?;
        for (i, name) in self.0.keys().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} = \"{}\"", Self::REDACTED)?;
        }
        f.write_str(" }")
    }
}

impl fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn url_shows_host_and_port_only() {
        let url = SecretUrl::new(Url::parse("https://u:KEY@h.example:8443/v3/KEY?k=KEY").unwrap());
        assert_eq!(url.to_string(), "https://h.example:8443/<redacted>");
        assert!(!format!("{url:?}").contains("KEY"));
    }

    #[test]
    fn url_secret_parts_cover_path_query_userinfo_and_basic_credential() {
        let url = SecretUrl::new(
            Url::parse("https://us%65r:p%40ss@h.example/v3/KEY123?key=QKEY&x=1").unwrap(),
        );
        let parts = url.secret_parts();
        // base64("user:p@ss") as reqwest sends it, padding aside.
        for expected in [
            "KEY123",
            "QKEY",
            "us%65r",
            "user",
            "p%40ss",
            "p@ss",
            "dXNlcjpwQHNz",
        ] {
            assert!(parts.iter().any(|p| p == expected), "{expected}: {parts:?}");
        }
        for short in ["v3", "1"] {
            assert!(!parts.iter().any(|p| p == short), "{short}: {parts:?}");
        }
        let user_only = SecretUrl::new(Url::parse("http://user@h.example/").unwrap());
        assert!(user_only.secret_parts().contains(&"dXNlcjo=".to_owned()));
        let plain = SecretUrl::new(Url::parse("http://h.example/").unwrap());
        assert!(plain.secret_parts().is_empty());
    }

    #[test]
    fn base64_round_trips_every_length() {
        for text in ["", "a", "ab", "abc", "abcd", "user:password"] {
            let encoded = base64_unpadded(text.as_bytes());
            assert_eq!(base64_decoded(&encoded).as_deref(), Some(text.as_bytes()));
        }
        assert_eq!(base64_unpadded(b"user:password"), "dXNlcjpwYXNzd29yZA");
        assert_eq!(
            base64_decoded("dXNlcjpwYXNzd29yZA==").unwrap(),
            b"user:password"
        );
        assert_eq!(base64_decoded("not base64!"), None);
    }

    #[test]
    fn header_secret_parts_cover_values_tokens_and_basic_halves() {
        let mut map = HeaderMap::new();
        map.insert(
            "authorization",
            HeaderValue::from_static("Basic dXNlcjpwYXNzd29yZA=="),
        );
        map.insert("x-api-key", HeaderValue::from_static("Bearer HKEY"));
        let parts = SecretHeaders::new(map).secret_parts();
        for expected in [
            "Basic dXNlcjpwYXNzd29yZA==",
            "dXNlcjpwYXNzd29yZA==",
            "user:password",
            "password",
            "HKEY",
            "Bearer HKEY",
        ] {
            assert!(parts.iter().any(|p| p == expected), "{expected}: {parts:?}");
        }
    }

    #[test]
    fn headers_show_names_only() {
        let mut map = HeaderMap::new();
        map.insert("authorization", HeaderValue::from_static("Bearer KEY"));
        let headers = SecretHeaders::new(map);
        assert_eq!(headers.to_string(), r#"{ authorization = "<redacted>" }"#);
        assert!(!format!("{headers:?}").contains("KEY"));
    }

    #[test]
    fn header_parts_skip_the_scheme_and_short_values() {
        let mut map = HeaderMap::new();
        map.insert("authorization", HeaderValue::from_static("Bearer TOKEN1"));
        map.insert("x-shard", HeaderValue::from_static("2"));
        let parts = SecretHeaders::new(map).secret_parts();
        assert!(parts.contains(&"TOKEN1".to_owned()), "{parts:?}");
        assert!(parts.contains(&"Bearer TOKEN1".to_owned()), "{parts:?}");
        assert!(!parts.contains(&"Bearer".to_owned()), "{parts:?}");
        assert!(!parts.contains(&"2".to_owned()), "{parts:?}");
    }
}
