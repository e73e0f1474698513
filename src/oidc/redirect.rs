//! Where a sign-in may send the browser back to: `oidc.redirect_allowlist`.
//!
//! Both sides are parsed as WHATWG URLs (the `url` crate, as browsers parse them), so what is
//! compared is what a browser would open: dot segments resolved, backslashes read as slashes,
//! the host lowercased and punycoded, the default port made explicit. A target matches an entry
//! only with the same scheme, host and port, and a path equal to the entry's or below it (an
//! entry without a path admits the whole origin). A target with credentials (`https://a@b`), a
//! fragment (the callback writes its own), or another scheme than http(s) matches nothing.

use url::Url;

/// The longest `redirect_to` accepted, in bytes.
pub const MAX_LEN: usize = 2048;

/// One entry of the allowlist, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    scheme: String,
    host: String,
    port: u16,
    /// Without a trailing slash; empty for the whole origin.
    path: String,
}

/// A URL's scheme, host and port if it is an http(s) URL without credentials.
fn origin_of(url: &Url) -> Result<(String, String, u16), &'static str> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("no user or password in the URL");
    }
    let host = url.host_str().ok_or("a host is required")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    Ok((url.scheme().to_string(), host.to_string(), port))
}

impl Allowed {
    /// An allowlist entry: an http(s) URL without credentials, query or fragment.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let url = Url::parse(entry.trim()).map_err(|e| e.to_string())?;
        let (scheme, host, port) = origin_of(&url).map_err(str::to_string)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err("no query or fragment in an allowlist entry".into());
        }
        Ok(Self {
            scheme,
            host,
            port,
            path: url.path().trim_end_matches('/').to_string(),
        })
    }

    fn admits(&self, url: &Url) -> bool {
        let Ok((scheme, host, port)) = origin_of(url) else {
            return false;
        };
        if (scheme, host, port) != (self.scheme.clone(), self.host.clone(), self.port) {
            return false;
        }
        let path = url.path();
        self.path.is_empty()
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// `redirect_to` as the browser will be sent to it, if the allowlist admits it.
pub fn check(redirect_to: &str, allowlist: &[Allowed]) -> Option<Url> {
    if redirect_to.len() > MAX_LEN {
        return None;
    }
    let url = Url::parse(redirect_to).ok()?;
    if url.fragment().is_some() {
        return None;
    }
    allowlist.iter().any(|a| a.admits(&url)).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<Allowed> {
        entries.iter().map(|e| Allowed::parse(e).unwrap()).collect()
    }

    #[test]
    fn an_origin_admits_its_paths_and_nothing_that_looks_like_it() {
        let l = list(&["https://app.example.com"]);
        for ok in [
            "https://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/after/login?x=1",
            "https://APP.example.com:443/x",
            "https://app.example.com/a/../b",
            // A backslash is a slash to browsers: this is a path on app.example.com.
            "https://app.example.com\\@evil.example/",
        ] {
            assert!(check(ok, &l).is_some(), "{ok}");
        }
        for bad in [
            "http://app.example.com/",
            "https://app.example.com@evil.example/",
            "https://user:pw@app.example.com/",
            "https://app.example.com.evil.example/",
            "https://evilapp.example.com/",
            "https://app.example.com:8443/",
            "https://app.example.com/#frag",
            "//app.example.com/",
            "/relative",
            "javascript:alert(1)",
            "data:text/html,hi",
            "",
        ] {
            assert!(check(bad, &l).is_none(), "{bad}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_LEN));
        assert!(check(&long, &l).is_none());
    }

    #[test]
    fn a_path_admits_itself_and_below_only() {
        let l = list(&["https://example.com/app/"]);
        assert!(check("https://example.com/app", &l).is_some());
        assert!(check("https://example.com/app/done", &l).is_some());
        assert!(check("https://example.com/apple", &l).is_none());
        assert!(check("https://example.com/", &l).is_none());
        assert!(check("https://example.com/app/../admin", &l).is_none());
        assert!(check("https://example.com/app/%2e%2e/admin", &l).is_none());
    }

    #[test]
    fn entries_are_plain_http_urls() {
        assert!(Allowed::parse("https://app.example.com/?q=1").is_err());
        assert!(Allowed::parse("https://u@app.example.com").is_err());
        assert!(Allowed::parse("ftp://app.example.com").is_err());
        assert!(Allowed::parse("app.example.com").is_err());
        assert!(Allowed::parse("http://localhost:3000").is_ok());
    }
}
