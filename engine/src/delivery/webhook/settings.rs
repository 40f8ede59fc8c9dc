//! `[webhooks]`: per-merchant signed lead webhooks (docs/CONFIG.md,
//! docs/LEADS.md "Webhooks"). Off unless a merchant is configured.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::backoff::Backoff;
use crate::config::{ConfigError, Secret};
use crate::merchants::MerchantId;

/// Shortest webhook secret, bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// One entry per merchant: `{ merchant = "m1", url = "https://…",
    /// secret_env = "M1_WEBHOOK_SECRET" }`. Empty = off. Default empty.
    pub merchants: Vec<WebhookMerchantConfig>,
    /// How often a merchant with nothing in flight looks for new leads,
    /// ms. Default 1,000.
    pub interval_ms: u64,
    /// Leads are sent once they are this old, ms (as the pull API's
    /// `settle_ms`: rows reach ClickHouse a batch late). Default 10,000.
    pub settle_ms: u64,
    /// Most leads read per page (the cursor moves once per page).
    /// Default 100.
    pub batch: u32,
    /// Most requests in flight per merchant. Default 4.
    pub concurrency: usize,
    /// Attempts per lead before it waits in the backlog. Default 8.
    pub max_attempts: u32,
    /// Cap of the first retry's delay, ms; doubles per attempt (with
    /// jitter: between half the cap and the cap). Default 1,000.
    pub backoff_initial_ms: u64,
    /// Longest delay between two attempts, ms (also the cap on a
    /// receiver's `Retry-After`). Default 60,000.
    pub backoff_max_ms: u64,
    /// Time allowed for one request (connect, send, answer), ms; then the
    /// attempt failed. Default 10,000.
    pub timeout_ms: u64,
    /// Seconds between two passes over the backlog (one attempt per
    /// waiting lead; also `POST /admin/webhooks/backlog/retry`). Default 300.
    pub backlog_retry_secs: u64,
    /// Most backlog entries per merchant per pass. Default 100.
    pub backlog_batch: u32,
    /// Development and tests: allow `http://` URLs, to loopback hosts only
    /// (`localhost`, `127.0.0.0/8`, `[::1]`); contacts cross no network
    /// in clear. Default false (`https://` only).
    pub insecure_http: bool,
    /// PEM file of extra CA certificates to trust for `https://` receivers
    /// (a CRM behind a private CA), besides the Mozilla roots. Default unset.
    pub ca_file: Option<PathBuf>,
    /// Time allowed for each ClickHouse call, ms. Default 10,000.
    pub query_timeout_ms: u64,
    /// ClickHouse user the sender reads leads (ciphertexts) and writes
    /// `lead_audit`, `webhook_cursors` and `webhook_backlog` as: the
    /// `delivery` user of `roomgate grants`. Default: `clickhouse.user`.
    pub clickhouse_user: Option<String>,
    /// Its password (`ROOMGATE_WEBHOOKS_CLICKHOUSE_PASSWORD`). Default:
    /// `clickhouse.password` when `clickhouse_user` is unset.
    pub clickhouse_password: Option<Secret>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            merchants: Vec::new(),
            interval_ms: 1_000,
            settle_ms: 10_000,
            batch: 100,
            concurrency: 4,
            max_attempts: 8,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            timeout_ms: 10_000,
            backlog_retry_secs: 300,
            backlog_batch: 100,
            insecure_http: false,
            ca_file: None,
            query_timeout_ms: 10_000,
            clickhouse_user: None,
            clickhouse_password: None,
        }
    }
}

/// One merchant's webhook.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookMerchantConfig {
    /// The merchant (`[a-z0-9_-]`, as in `room_merchants`).
    pub merchant: String,
    /// Where its leads are POSTed: `https://…` (`http://` to loopback with
    /// `insecure_http`). No `user:password@`.
    pub url: String,
    /// The signing secret (at least 32 bytes); or `secret_env`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The environment variable holding the secret (preferred).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// During a rotation, the secret being retired: requests are signed
    /// under both until it is removed. Or `previous_secret_env`.
    #[serde(default)]
    pub previous_secret: Option<Secret>,
    /// The environment variable holding the previous secret.
    #[serde(default)]
    pub previous_secret_env: Option<String>,
    /// Send `suspect` leads too (as the pull API's `include=suspect`).
    /// Default false.
    #[serde(default)]
    pub include_suspect: bool,
}

/// A URL as logs, errors, `Debug` and the admin API show it: scheme and
/// host\[:port\] only. Never the path or query (many receivers take a
/// token there), nor `user:password@`.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(no scheme://host)".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}")
}

impl std::fmt::Debug for WebhookMerchantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMerchantConfig")
            .field("merchant", &self.merchant)
            .field("url", &redacted_url(&self.url))
            .field("secret", &self.secret)
            .field("secret_env", &self.secret_env)
            .field("previous_secret", &self.previous_secret)
            .field("previous_secret_env", &self.previous_secret_env)
            .field("include_suspect", &self.include_suspect)
            .finish()
    }
}

/// A merchant's webhook, checked.
#[derive(Clone)]
pub struct Target {
    /// The merchant.
    pub merchant: MerchantId,
    /// The URL.
    pub url: hyper::Uri,
    /// Secrets to sign under, the current one first.
    pub secrets: Vec<Secret>,
    /// Send suspect leads too.
    pub include_suspect: bool,
}

impl Target {
    /// `lead_audit.actor`: `webhook:<host[:port]>`, where the contacts went
    /// (never the path or query, which may hold a token).
    pub fn actor(&self) -> String {
        format!(
            "webhook:{}",
            self.url.authority().map_or("", |a| a.as_str())
        )
    }

    /// The URL for logs and the admin API: scheme and host\[:port\] (never
    /// the path or query, which may hold a token).
    pub fn display_url(&self) -> String {
        redacted_url(&self.url.to_string())
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("merchant", &self.merchant)
            .field("url", &self.display_url())
            .field("secrets", &self.secrets)
            .field("include_suspect", &self.include_suspect)
            .finish()
    }
}

fn loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn secret_of(
    what: &str,
    value: &Option<Secret>,
    env_name: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, String> {
    let s = match (value, env_name) {
        (Some(_), Some(_)) => return Err(format!("{what} and {what}_env: give one")),
        (Some(s), None) => s.clone(),
        (None, Some(name)) => match env(name) {
            Some(v) => Secret::new(v),
            None => return Err(format!("{what}_env: ${name} is not set")),
        },
        (None, None) => return Ok(None),
    };
    if s.expose().len() < MIN_SECRET_BYTES {
        return Err(format!("{what} must be at least {MIN_SECRET_BYTES} bytes"));
    }
    Ok(Some(s))
}

impl WebhookMerchantConfig {
    fn target(
        &self,
        insecure_http: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Target, String> {
        let merchant = MerchantId::parse(&self.merchant).map_err(|e| e.to_string())?;
        let shown = redacted_url(&self.url);
        let url: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| format!("url {:?} (path and query not shown): {e}", shown))?;
        let Some(authority) = url.authority() else {
            return Err(format!("url {shown:?}: no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "url {shown:?}: no user:password@ (the signature authenticates the platform)"
            ));
        }
        match url.scheme_str() {
            Some("https") => {}
            Some("http") if insecure_http && loopback(authority.host()) => {}
            Some("http") if insecure_http => {
                return Err(format!(
                    "url {shown:?}: http:// only to a loopback host (contacts would cross the network in clear)"
                ))
            }
            _ => {
                return Err(format!(
                    "url {shown:?}: must be https:// (http:// to loopback only with webhooks.insecure_http)"
                ))
            }
        }
        let Some(current) = secret_of("secret", &self.secret, &self.secret_env, env)? else {
            return Err("secret or secret_env is required".into());
        };
        let mut secrets = vec![current];
        if let Some(p) = secret_of(
            "previous_secret",
            &self.previous_secret,
            &self.previous_secret_env,
            env,
        )? {
            secrets.push(p);
        }
        Ok(Target {
            merchant,
            url,
            secrets,
            include_suspect: self.include_suspect,
        })
    }
}

impl WebhooksConfig {
    /// The merchants' webhooks, checked, secrets read from `env`.
    pub fn targets_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Target>, ConfigError> {
        let mut out: Vec<Target> = Vec::new();
        for (i, m) in self.merchants.iter().enumerate() {
            let t = m.target(self.insecure_http, env).map_err(|e| {
                ConfigError::Invalid(format!("webhooks.merchants[{i}] ({}): {e}", m.merchant))
            })?;
            if out.iter().any(|o| o.merchant == t.merchant) {
                return Err(ConfigError::Invalid(format!(
                    "webhooks.merchants: {} appears twice (one webhook per merchant)",
                    t.merchant
                )));
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The merchants' webhooks, secrets read from the process environment.
    pub fn targets(&self) -> Result<Vec<Target>, ConfigError> {
        self.targets_with(&|name| std::env::var(name).ok())
    }

    /// The retry schedule.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(self.backoff_initial_ms),
            max: Duration::from_millis(self.backoff_max_ms),
        }
    }

    /// Check ranges and every merchant (secrets read from `env`).
    pub fn check_with(
        &self,
        null_sink: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("webhooks.{m}")));
        if self.merchants.is_empty() {
            return Ok(());
        }
        self.targets_with(env)?;
        if null_sink {
            return Err(ConfigError::Invalid(
                "webhooks need ClickHouse: not with clickhouse.null_sink".into(),
            ));
        }
        if self.interval_ms < 10 {
            return bad("interval_ms must be at least 10");
        }
        if self.settle_ms > 3_600_000 {
            return bad("settle_ms must be at most 3,600,000 (an hour)");
        }
        if !(1..=crate::delivery::query::MAX_LIMIT).contains(&self.batch) {
            return bad("batch must be 1 to 1,000");
        }
        if !(1..=64).contains(&self.concurrency) {
            return bad("concurrency must be 1 to 64");
        }
        if !(1..=100).contains(&self.max_attempts) {
            return bad("max_attempts must be 1 to 100");
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return bad("backoff_initial_ms must be at least 1 and at most backoff_max_ms");
        }
        if self.backoff_max_ms > 86_400_000 {
            return bad("backoff_max_ms must be at most 86,400,000 (a day)");
        }
        if !(1..=300_000).contains(&self.timeout_ms) {
            return bad("timeout_ms must be 1 to 300,000");
        }
        if self.backlog_retry_secs == 0 {
            return bad("backlog_retry_secs must be at least 1");
        }
        if !(1..=crate::delivery::query::MAX_LIMIT).contains(&self.backlog_batch) {
            return bad("backlog_batch must be 1 to 1,000");
        }
        if self.query_timeout_ms == 0 {
            return bad("query_timeout_ms must be at least 1");
        }
        if let Some(f) = &self.ca_file {
            if !f.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "webhooks.ca_file {}: not a readable file",
                    f.display()
                )));
            }
        }
        Ok(())
    }

    /// [`Self::check_with`] the process environment.
    pub fn check(&self, null_sink: bool) -> Result<(), ConfigError> {
        self.check_with(null_sink, &|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const S: &str = "0123456789abcdef0123456789abcdef";

    fn env(name: &str) -> Option<String> {
        (name == "M1_SECRET").then(|| S.to_owned())
    }

    fn parse(toml: &str) -> WebhooksConfig {
        Config::from_toml(toml).unwrap().webhooks.unwrap()
    }

    fn err(w: &WebhooksConfig) -> String {
        w.check_with(false, &env).unwrap_err().to_string()
    }

    #[test]
    fn webhooks_are_off_unless_configured_and_default_sensibly() {
        assert!(Config::default().webhooks.is_none());
        let w = parse("[webhooks]\n");
        assert!(w.merchants.is_empty());
        assert!(
            w.check_with(true, &env).is_ok(),
            "no merchant: nothing to check"
        );
        assert_eq!(
            (
                w.max_attempts,
                w.timeout_ms,
                w.backlog_retry_secs,
                w.concurrency
            ),
            (8, 10_000, 300, 4)
        );
        assert_eq!(w.backoff().cap(7), Duration::from_secs(60));
    }

    #[test]
    fn merchants_need_https_a_long_secret_and_one_entry_each() {
        let w = parse(
            "[webhooks]\nmerchants = [{ merchant = \"m1\", url = \"https://crm.example.com/hook?token=x\", secret_env = \"M1_SECRET\" }]\n",
        );
        w.check_with(false, &env).unwrap();
        let t = &w.targets_with(&env).unwrap()[0];
        assert_eq!(t.actor(), "webhook:crm.example.com");
        assert_eq!(t.display_url(), "https://crm.example.com");
        assert_eq!(t.secrets.len(), 1);
        assert!(w
            .check_with(true, &env)
            .unwrap_err()
            .to_string()
            .contains("null_sink"));

        let one = |url: &str, secret: &str, extra: &str| {
            parse(&format!(
                "[webhooks]\n{extra}merchants = [{{ merchant = \"m1\", url = \"{url}\", {secret} }}]\n"
            ))
        };
        let ok = format!("secret = \"{S}\"");
        for (url, extra, want) in [
            ("http://crm.example.com/h", "", "must be https://"),
            (
                "http://crm.example.com/h",
                "insecure_http = true\n",
                "loopback",
            ),
            ("https://u:p@crm.example.com/h", "", "user:password"),
            (
                "ftp://crm.example.com/h",
                "insecure_http = true\n",
                "must be https://",
            ),
            ("/relative", "", "no host"),
        ] {
            let e = err(&one(url, &ok, extra));
            assert!(e.contains(want), "{url}: {e}");
            assert!(e.contains("webhooks.merchants[0] (m1)"), "{e}");
            assert!(!e.contains(":p@"), "credentials in {e}");
        }
        for url in [
            "http://127.0.0.1:8080/h",
            "http://localhost/h",
            "http://[::1]:9/h",
        ] {
            one(url, &ok, "insecure_http = true\n")
                .check_with(false, &env)
                .unwrap();
        }
        for (secret, want) in [
            ("secret = \"short\"".to_owned(), "at least 32 bytes"),
            ("secret_env = \"NOPE\"".to_owned(), "$NOPE is not set"),
            (
                format!("secret = \"{S}\", secret_env = \"M1_SECRET\""),
                "give one",
            ),
            (
                "include_suspect = true".to_owned(),
                "secret or secret_env is required",
            ),
            (
                format!("{ok}, previous_secret = \"x\""),
                "previous_secret must be at least",
            ),
        ] {
            let e = err(&one("https://h/x", &secret, ""));
            assert!(e.contains(want), "{secret}: {e}");
            assert!(!e.contains(S), "secret in {e}");
        }
        let rotating = one(
            "https://h/x",
            &format!("{ok}, previous_secret_env = \"M1_SECRET\""),
            "",
        );
        assert_eq!(rotating.targets_with(&env).unwrap()[0].secrets.len(), 2);
        let twice = parse(&format!(
            "[webhooks]\nmerchants = [{{ merchant = \"m1\", url = \"https://a/\", {ok} }}, {{ merchant = \"m1\", url = \"https://b/\", {ok} }}]\n"
        ));
        assert!(err(&twice).contains("appears twice"));
        let bad_id = one("https://h/x", &ok, "").merchants[0].clone();
        let w = WebhooksConfig {
            merchants: vec![WebhookMerchantConfig {
                merchant: "M 1".into(),
                ..bad_id
            }],
            ..WebhooksConfig::default()
        };
        assert!(err(&w).contains("merchants[0]"));
    }

    #[test]
    fn a_token_in_the_url_is_never_shown() {
        // Many CRMs take a token in the path or the query: logs, errors,
        // Debug and the admin API show scheme and host[:port] only.
        let token = "tok3n-s3cret";
        let url = format!("https://crm.example.com:8443/hooks/{token}/in?key={token}#{token}");
        let w = parse(&format!(
            "[webhooks]\nmerchants = [{{ merchant = \"m1\", url = \"{url}\", secret_env = \"M1_SECRET\" }}]\n"
        ));
        let t = &w.targets_with(&env).unwrap()[0];
        assert_eq!(t.display_url(), "https://crm.example.com:8443");
        assert_eq!(t.actor(), "webhook:crm.example.com:8443");
        for shown in [
            format!("{t:?}"),
            format!("{w:?}"),
            format!("{:?}", w.merchants[0]),
            format!("{:#?}", w.targets_with(&env).unwrap()),
        ] {
            assert!(!shown.contains(token), "{shown}");
            assert!(!shown.contains(S), "{shown}");
            assert!(shown.contains("crm.example.com:8443"), "{shown}");
        }
        for (url, want) in [
            (
                format!("https://crm.example.com/{token}?k={token}"),
                "https://crm.example.com",
            ),
            (format!("https://h:1?{token}"), "https://h:1"),
            (format!("http://u:{token}@h/{token}"), "http://h"),
            (format!("/{token}"), "(no scheme://host)"),
        ] {
            assert_eq!(redacted_url(&url), want);
        }
        // Config errors: every kind, with a token in the path and query.
        let ok = format!("secret = \"{S}\"");
        for (url, extra, want) in [
            (
                format!("http://crm.example.com/{token}?t={token}"),
                "",
                "must be https://",
            ),
            (
                format!("http://crm.example.com/{token}?t={token}"),
                "insecure_http = true\n",
                "loopback",
            ),
            (
                format!("https://u:{token}@crm.example.com/{token}"),
                "",
                "user:password",
            ),
            (format!("/{token}?t={token}"), "", "no host"),
            (
                format!("https://crm.example.com/{token} x?t={token}"),
                "",
                "url",
            ),
        ] {
            let w = parse(&format!(
                "[webhooks]\n{extra}merchants = [{{ merchant = \"m1\", url = \"{url}\", {ok} }}]\n"
            ));
            let e = err(&w);
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains(token), "token in {e}");
        }
    }

    #[test]
    fn ranges_are_checked() {
        let base = parse(&format!(
            "[webhooks]\nmerchants = [{{ merchant = \"m1\", url = \"https://h/\", secret = \"{S}\" }}]\n"
        ));
        type Case = (&'static str, fn(&mut WebhooksConfig));
        let cases: [Case; 10] = [
            ("interval_ms", |w| w.interval_ms = 0),
            ("settle_ms", |w| w.settle_ms = 3_600_001),
            ("batch", |w| w.batch = 0),
            ("concurrency", |w| w.concurrency = 0),
            ("max_attempts", |w| w.max_attempts = 0),
            ("backoff_initial_ms", |w| w.backoff_max_ms = 10),
            ("timeout_ms", |w| w.timeout_ms = 0),
            ("backlog_retry_secs", |w| w.backlog_retry_secs = 0),
            ("backlog_batch", |w| w.backlog_batch = 5_000),
            ("ca_file", |w| {
                w.ca_file = Some("/nonexistent/ca.pem".into())
            }),
        ];
        for (field, f) in cases {
            let mut w = base.clone();
            f(&mut w);
            let e = err(&w);
            assert!(e.contains(&format!("webhooks.{field}")), "{field}: {e}");
        }
        assert!(base.check_with(false, &env).is_ok());
    }
}
