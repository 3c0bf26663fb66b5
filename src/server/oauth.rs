//! The token service over HTTP: `POST /oauth/token` (RFC 6749, form-encoded), `POST /oauth/revoke`
//! (RFC 7009) and `GET /.well-known/jwks.json`, on the HTTPS and edge listeners only. Every answer carries
//! `Cache-Control: no-store` and `Pragma: no-cache`, except the JWKS document (public keys, `max-age=60`);
//! errors are RFC 6749 §5.2 JSON. Nothing secret is logged.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Limited};

use crate::app::App;
use crate::app::channel::Channel;
use crate::auth::service::{ACTIVATION_CODE_GRANT, GrantError, Lifetimes, ServiceError, UNKNOWN_CODE};
use crate::ops::metrics::{GrantType, Metrics};
use crate::provision::filename::DeviceName;
use crate::provision::inventory::Inventory;
use crate::provision::subject::Subject;
use crate::server::response::{Body, allow, head_only, json, with_body};
use crate::server::route::{JWKS_PATH, REVOKE_PATH};
use crate::util::time::unix_now;

/// Form bodies larger than this are refused.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Answers a request for one of the token service's paths, on the HTTPS or the edge listener (`channel`).
pub async fn handle<B>(
    app: &App,
    metrics: &Metrics,
    peer: SocketAddr,
    channel: Channel,
    req: Request<B>,
) -> (Response<Body>, Option<Subject>, &'static str)
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(service) = app.token_service() else {
        return (
            json(StatusCode::NOT_FOUND, error_body("invalid_request", "the token service is not configured")),
            None,
            "no-token-service",
        );
    };
    let path = req.uri().path().to_owned();
    if path == JWKS_PATH {
        return match *req.method() {
            Method::GET | Method::HEAD => {
                // Public keys: a verifier may keep them a minute (so no Pragma: no-cache either).
                let mut r = with_body(StatusCode::OK, service.jwks(), "application/json");
                r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
                (if req.method() == Method::HEAD { head_only(r) } else { r }, None, "")
            }
            _ => (not_allowed("GET, HEAD"), None, "method"),
        };
    }
    if req.method() != Method::POST {
        return (not_allowed("POST"), None, "method");
    }
    let form_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    });
    if !form_type {
        return (
            grant_error(&GrantError::InvalidRequest("the body must be application/x-www-form-urlencoded")),
            None,
            "bad-content-type",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_FORM_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return (grant_error(&GrantError::InvalidRequest("the body is too large or broken")), None, "bad-body");
        }
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => return (grant_error(&e), None, "bad-form"),
    };
    let now = unix_now() as i64;
    if path == REVOKE_PATH {
        // RFC 7009 §2.2: 200 whether or not the token was known.
        let Some(token) = form.get("token") else {
            return (grant_error(&GrantError::InvalidRequest("token is required")), None, "bad-form");
        };
        let verifier = Arc::clone(&*app.verifier());
        return match service.revoke_token(token, &verifier, now).await {
            Ok(subject) => {
                // The view takes the revocation in, and counts it (sipcfg_token_revocations_total).
                refresh_view(app, now).await;
                (json(StatusCode::OK, Bytes::from_static(b"{}")), subject, "")
            }
            Err(e) => {
                let e = GrantError::from(e);
                (
                    grant_error(&e),
                    None,
                    if matches!(e, GrantError::Unavailable(_)) { "unavailable" } else { "store-error" },
                )
            }
        };
    }

    // The token endpoint: first catch up with revocations and keys changed by other processes.
    refresh_view(app, now).await;
    let grant = match form.get("grant_type").map(String::as_str) {
        Some(ACTIVATION_CODE_GRANT) => GrantType::ActivationCode,
        Some("refresh_token") => GrantType::RefreshToken,
        _ => GrantType::Other,
    };
    let ip = peer.ip();
    if let Some(wait) = app.grant_limiter().check(ip, now) {
        metrics.grant(grant, false);
        let mut r =
            json(StatusCode::TOO_MANY_REQUESTS, error_body("slow_down", "too many failed grants from this address"));
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return (r, None, "rate-limited");
    }
    let deployment = app.provisioner().current();
    let cluster = &deployment.inventory.cluster;
    let life = Lifetimes::of(cluster);
    let result = if !cluster.refresh_login_flow {
        Err(GrantError::UnsupportedGrantType("the refresh login flow is disabled on this cluster"))
    } else {
        match form.get("grant_type").map(String::as_str) {
            None => Err(GrantError::InvalidRequest("grant_type is required")),
            Some(ACTIVATION_CODE_GRANT) => match form.get("code") {
                Some(code) => redeem(app, service, code, form.get("device_name"), peer, channel, now, life).await,
                None => Err(GrantError::InvalidRequest("code is required")),
            },
            Some("refresh_token") => match form.get("refresh_token") {
                Some(token) => service.refresh(token, now, life).await,
                None => Err(GrantError::InvalidRequest("refresh_token is required")),
            },
            Some(_) => Err(GrantError::UnsupportedGrantType("supported: refresh_token and the activation-code grant")),
        }
    };
    metrics.grant(grant, result.is_ok());
    match result {
        Ok(tokens) => {
            let body = serde_json::to_vec(&tokens).unwrap_or_default();
            (json(StatusCode::OK, Bytes::from(body)), None, "")
        }
        Err(e) => {
            if e.counts_as_failure() {
                app.grant_limiter().failed(ip, now);
            }
            match &e {
                GrantError::Server(detail) => tracing::error!(error = %detail, "token endpoint failed"),
                GrantError::Unavailable(detail) => tracing::debug!(error = %detail, "grant refused: store unreachable"),
                _ => {}
            }
            (grant_error(&e), None, e.code())
        }
    }
}

/// The activation-code grant. A phone may name itself (`device_name`, its `SEP` name): required for the
/// code of a placeholder device, which then takes that name; for any other code, a name that is not the
/// code's device gets the answer of an unknown code.
#[allow(clippy::too_many_arguments)]
async fn redeem(
    app: &App,
    service: &crate::auth::service::TokenService,
    code: &str,
    claimed: Option<&String>,
    peer: SocketAddr,
    channel: Channel,
    now: i64,
    life: Lifetimes,
) -> Result<crate::auth::service::TokenResponse, GrantError> {
    app.manage().adopt_placeholder(code, claimed.map(String::as_str), &peer.ip().to_string()).await?;
    // After an adoption, the inventory in force holds the phone under its own name.
    let deployment = app.provisioner().current();
    service
        .redeem(code, now, life, |device| {
            if let Some(claimed) = claimed
                && !claimed.eq_ignore_ascii_case(device.as_str())
            {
                tracing::warn!(target: "sipcfg::tokens", %device, claimed = %claimed, "activation code presented by a phone that names another device");
                return Err(GrantError::InvalidGrant(UNKNOWN_CODE));
            }
            admit_activation(&deployment.inventory, device, channel)
        })
        .await
}

/// Through an edge proxy (Mobile and Remote Access), only a device with CUCM's "Allow Activation Code via
/// MRA" may onboard with its code; on the phone port every device may. The phone gets the answer of an
/// unknown code (whoever holds a code learns nothing more of its device) and the log says why.
fn admit_activation(inventory: &Inventory, device: &DeviceName, channel: Channel) -> Result<(), GrantError> {
    if channel.admits_activation(inventory.device(device)) {
        return Ok(());
    }
    tracing::warn!(
        target: "sipcfg::tokens",
        %device,
        "activation code refused through an edge proxy: the device does not allow activation via MRA"
    );
    Err(GrantError::InvalidGrant(UNKNOWN_CODE))
}

/// After a revocation here, the file server must refuse the subject's tokens at once.
async fn refresh_view(app: &App, now: i64) {
    match app.sync_tokens(now).await {
        Ok(_) => {}
        // The store watch says so once; the grant itself answers 503.
        Err(ServiceError::Store(e)) if e.is_unavailable() => tracing::debug!(error = %e, "token state not reloaded"),
        Err(e) => tracing::error!(error = %e, "token service state could not be reloaded"),
    }
}

/// Form fields; a repeated parameter is an error (RFC 6749 §3.1).
fn parse_form(body: &[u8]) -> Result<std::collections::HashMap<String, String>, GrantError> {
    let mut form = std::collections::HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(GrantError::InvalidRequest("a parameter is repeated"));
        }
    }
    Ok(form)
}

fn error_body(code: &str, description: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": code, "error_description": description }).to_string())
}

fn grant_error(e: &GrantError) -> Response<Body> {
    let description = match e {
        GrantError::InvalidRequest(d) | GrantError::InvalidGrant(d) | GrantError::UnsupportedGrantType(d) => *d,
        GrantError::Server(_) => "internal error",
        GrantError::Unavailable(_) => "the token service cannot reach its store; try again shortly",
    };
    let status = match e {
        GrantError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        GrantError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut r = json(status, error_body(e.code(), description));
    if matches!(e, GrantError::Unavailable(_)) {
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static(UNAVAILABLE_RETRY_AFTER));
    }
    r
}

/// `Retry-After` of a grant refused because the store is unreachable (seconds): the node probes it every
/// second, so a phone that comes back then finds it if it is back.
const UNAVAILABLE_RETRY_AFTER: &str = "5";

fn not_allowed(methods: &'static str) -> Response<Body> {
    allow(json(StatusCode::METHOD_NOT_ALLOWED, error_body("invalid_request", "method not allowed")), methods)
}
