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
}

impl fmt::Display for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{ ")?;
        for (i, name) in self.0.keys().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} = \"<redacted>\"")?;
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
    fn headers_show_names_only() {
        let mut map = HeaderMap::new();
        map.insert("authorization", HeaderValue::from_static("Bearer KEY"));
        let headers = SecretHeaders::new(map);
        assert_eq!(headers.to_string(), r#"{ authorization = "<redacted>" }"#);
        assert!(!format!("{headers:?}").contains("KEY"));
    }
}
