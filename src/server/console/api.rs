//! `/api/v1`: the management API (JSON; errors are RFC 9457 problem documents; lists are paged with
//! `offset` and `limit`). Described by `/api/v1/openapi.json` (`openapi.json` beside this file), which a test
//! checks against [`ROUTES`].

// Routes return `Err(answer)` for an early refusal: the "error" is the response itself, made once per request.
#![allow(clippy::result_large_err)]

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::Deserialize;

use crate::app::manage::{Caller, DeviceInput, DeviceQuery, DeviceStatus, ManageError, Manager, NewCode};
use crate::app::pools::PoolEntry;
use crate::auth::accounts::Role;
use crate::provision::inventory::{ClusterDoc, CmGroupDoc, DateTimeGroupDoc, DevicePoolDoc, ProfileDoc, UserDoc};
use crate::provision::settings::ClusterChange;
use crate::provision::subject::Subject;
use crate::server::console::{Authenticated, Console, Req, problem, problem_of};
use crate::server::response::{Body, with_body};

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route: method and path template, as the OpenAPI document names them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/summary"),
    ("GET", "/api/v1/devices"),
    ("POST", "/api/v1/devices"),
    ("GET", "/api/v1/devices/{name}"),
    ("PUT", "/api/v1/devices/{name}"),
    ("DELETE", "/api/v1/devices/{name}"),
    ("POST", "/api/v1/devices/{name}/enable"),
    ("POST", "/api/v1/devices/{name}/disable"),
    ("GET", "/api/v1/devices/{name}/status"),
    ("GET", "/api/v1/devices/{name}/config"),
    ("GET", "/api/v1/devices/{name}/activation-codes"),
    ("POST", "/api/v1/devices/{name}/activation-codes"),
    ("GET", "/api/v1/devices/{name}/tokens"),
    ("POST", "/api/v1/devices/{name}/tokens/revoke"),
    ("GET", "/api/v1/activation-codes"),
    ("POST", "/api/v1/activation-codes/bulk"),
    ("DELETE", "/api/v1/activation-codes/{id}"),
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/users/{id}"),
    ("PUT", "/api/v1/users/{id}"),
    ("DELETE", "/api/v1/users/{id}"),
    ("GET", "/api/v1/users/{id}/tokens"),
    ("POST", "/api/v1/users/{id}/tokens/revoke"),
    ("GET", "/api/v1/profiles"),
    ("PUT", "/api/v1/profiles/{name}"),
    ("DELETE", "/api/v1/profiles/{name}"),
    ("GET", "/api/v1/device-pools"),
    ("GET", "/api/v1/device-pools/{name}"),
    ("PUT", "/api/v1/device-pools/{name}"),
    ("DELETE", "/api/v1/device-pools/{name}"),
    ("GET", "/api/v1/cm-groups"),
    ("GET", "/api/v1/cm-groups/{name}"),
    ("PUT", "/api/v1/cm-groups/{name}"),
    ("DELETE", "/api/v1/cm-groups/{name}"),
    ("GET", "/api/v1/date-time-groups"),
    ("GET", "/api/v1/date-time-groups/{name}"),
    ("PUT", "/api/v1/date-time-groups/{name}"),
    ("DELETE", "/api/v1/date-time-groups/{name}"),
    ("GET", "/api/v1/cluster"),
    ("PATCH", "/api/v1/cluster"),
    ("GET", "/api/v1/phone-edge-trust"),
    ("POST", "/api/v1/phone-edge-trust"),
    ("DELETE", "/api/v1/phone-edge-trust/{id}"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/accounts"),
];

fn ok_json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => with_body(status, Bytes::from(body), "application/json"),
        Err(e) => problem_of(&ManageError::Internal(e.to_string())),
    }
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

fn bad_json(e: impl std::fmt::Display) -> Response<Body> {
    problem(StatusCode::BAD_REQUEST, "Bad request", &format!("the body is not the JSON this route takes: {e}"))
}

fn not_found() -> Response<Body> {
    problem(StatusCode::NOT_FOUND, "Not found", "no such route in /api/v1 (see /api/v1/openapi.json)")
}

fn number(req: &Req, key: &str) -> Result<Option<usize>, Response<Body>> {
    match req.query.get(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            problem(StatusCode::BAD_REQUEST, "Bad request", &format!("query parameter {key}={v:?}: give a number"))
        }),
    }
}

/// The JSON body, if the request says it is JSON.
fn body<T: for<'de> Deserialize<'de>>(req: &Req) -> Result<T, Response<Body>> {
    let json = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&req.body).map_err(bad_json)
}

pub async fn handle(console: &Console, req: &Req) -> Response<Body> {
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let Some(rest) = segments.strip_prefix(&["api", "v1"]) else { return not_found() };
    if rest == ["openapi.json"] {
        return match req.method {
            Method::GET => with_body(StatusCode::OK, Bytes::from_static(OPENAPI.as_bytes()), "application/json"),
            _ => method_not_allowed("GET"),
        };
    }
    let who = match console.authenticate(req).await {
        Ok(Some(who)) => who,
        Ok(None) => {
            let mut r = problem(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "give an API token (Authorization: Bearer sipcfg_…, from `sipcfg admin token NAME`) or log in",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sipcfg-console\""));
            return r;
        }
        Err(e) => return problem_of(&e),
    };
    let unsafe_method = !matches!(req.method, Method::GET | Method::HEAD);
    if unsafe_method && !console.csrf_ok(&who, req, None) {
        return problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "a change made with a console session needs its CSRF token (X-CSRF-Token header)",
        );
    }
    match route(console, req, &who, rest).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = problem(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", &format!("this route takes {allow}"));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

type Answer = Result<Response<Body>, Response<Body>>;

fn done<T: serde::Serialize>(status: StatusCode, r: Result<T, ManageError>) -> Answer {
    r.map(|v| ok_json(status, &v)).map_err(|e| problem_of(&e))
}

async fn route(console: &Console, req: &Req, who: &Authenticated, rest: &[&str]) -> Answer {
    let manage = console.app.manage();
    let caller = who.caller();
    let m = &req.method;
    match rest {
        ["me"] => match *m {
            Method::GET => Ok(ok_json(StatusCode::OK, &who.account)),
            _ => Ok(method_not_allowed("GET")),
        },
        ["summary"] => match *m {
            Method::GET => {
                let days = number(req, "stale_days")?.unwrap_or(7).min(3650) as u32;
                done(StatusCode::OK, manage.summary(days).await)
            }
            _ => Ok(method_not_allowed("GET")),
        },
        ["devices"] => match *m {
            Method::GET => {
                let status = match req.query.get("status") {
                    None => None,
                    Some(s) => Some(DeviceStatus::parse(s).ok_or_else(|| {
                        problem(
                            StatusCode::BAD_REQUEST,
                            "Bad request",
                            &format!("status={s:?}: give disabled, onboarded, code-outstanding or new"),
                        )
                    })?),
                };
                let query = DeviceQuery {
                    search: req.query.get("q").cloned(),
                    status,
                    offset: number(req, "offset")?.unwrap_or(0),
                    limit: number(req, "limit")?,
                };
                done(StatusCode::OK, manage.devices(&query).await)
            }
            Method::POST => {
                let mut value: serde_json::Value = body(req)?;
                let name = value
                    .as_object_mut()
                    .and_then(|o| o.remove("name"))
                    .and_then(|n| n.as_str().map(str::to_owned))
                    .ok_or_else(|| bad_json("`name` (the device name, e.g. SEP001122334455) is required"))?;
                let doc: DeviceInput = serde_json::from_value(value).map_err(bad_json)?;
                let (device, _) = manage.put_device(&caller, &name, doc, false).await.map_err(|e| problem_of(&e))?;
                let mut r = ok_json(StatusCode::CREATED, &device);
                if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/devices/{}", device.summary.name)) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                Ok(r)
            }
            _ => Ok(method_not_allowed("GET, POST")),
        },
        ["devices", name] => match *m {
            Method::GET => done(StatusCode::OK, manage.device(name).await),
            Method::PUT => {
                let doc: DeviceInput = body(req)?;
                let (device, created) =
                    manage.put_device(&caller, name, doc, true).await.map_err(|e| problem_of(&e))?;
                Ok(ok_json(if created { StatusCode::CREATED } else { StatusCode::OK }, &device))
            }
            Method::DELETE => {
                manage.delete_device(&caller, name).await.map(|()| no_content()).map_err(|e| problem_of(&e))
            }
            _ => Ok(method_not_allowed("GET, PUT, DELETE")),
        },
        ["devices", name, action @ ("enable" | "disable")] => match *m {
            Method::POST => done(StatusCode::OK, manage.set_enabled(&caller, name, *action == "enable").await),
            _ => Ok(method_not_allowed("POST")),
        },
        ["devices", name, "status"] => match *m {
            Method::GET => done(StatusCode::OK, manage.device_state(name).await),
            _ => Ok(method_not_allowed("GET")),
        },
        ["devices", name, "config"] => match *m {
            Method::GET => {
                let xml = manage.rendered(name).await.map_err(|e| problem_of(&e))?;
                Ok(with_body(StatusCode::OK, Bytes::from(xml), "application/xml"))
            }
            _ => Ok(method_not_allowed("GET")),
        },
        ["devices", name, "activation-codes"] => match *m {
            Method::GET => {
                if !manage.has_device(name) {
                    return Err(problem_of(&ManageError::NotFound(format!("no device named {name:?}"))));
                }
                done(
                    StatusCode::OK,
                    manage.codes(Some(name), number(req, "offset")?.unwrap_or(0), number(req, "limit")?).await,
                )
            }
            Method::POST => {
                #[derive(Deserialize, Default)]
                #[serde(deny_unknown_fields)]
                struct Create {
                    valid_days: Option<u32>,
                }
                let create: Create = if req.body.is_empty() { Create::default() } else { body(req)? };
                done(StatusCode::CREATED, manage.create_code(&caller, name, create.valid_days).await)
            }
            _ => Ok(method_not_allowed("GET, POST")),
        },
        ["devices", name, "tokens"] => match *m {
            Method::GET => {
                let subject = manage.device_subject(name).map_err(|e| problem_of(&e))?;
                done(StatusCode::OK, manage.families(&subject).await)
            }
            _ => Ok(method_not_allowed("GET")),
        },
        ["devices", name, "tokens", "revoke"] => match *m {
            Method::POST => {
                let subject = manage.device_subject(name).map_err(|e| problem_of(&e))?;
                manage.revoke_tokens(&caller, &subject).await.map(|()| no_content()).map_err(|e| problem_of(&e))
            }
            _ => Ok(method_not_allowed("POST")),
        },
        ["activation-codes"] => match *m {
            Method::GET => done(
                StatusCode::OK,
                manage
                    .codes(
                        req.query.get("device").map(String::as_str),
                        number(req, "offset")?.unwrap_or(0),
                        number(req, "limit")?,
                    )
                    .await,
            ),
            _ => Ok(method_not_allowed("GET")),
        },
        ["activation-codes", "bulk"] => match *m {
            Method::POST => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Bulk {
                    devices: Vec<String>,
                    valid_days: Option<u32>,
                }
                let bulk: Bulk = body(req)?;
                let codes =
                    manage.create_codes(&caller, &bulk.devices, bulk.valid_days).await.map_err(|e| problem_of(&e))?;
                let csv = req
                    .headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("text/csv"));
                if csv {
                    let mut r =
                        with_body(StatusCode::CREATED, Bytes::from(codes_csv(&codes)), "text/csv; charset=utf-8");
                    r.headers_mut().insert(
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_static("attachment; filename=\"activation-codes.csv\""),
                    );
                    Ok(r)
                } else {
                    Ok(ok_json(StatusCode::CREATED, &codes))
                }
            }
            _ => Ok(method_not_allowed("POST")),
        },
        ["activation-codes", id] => match *m {
            Method::DELETE => manage.revoke_code(&caller, id).await.map(|()| no_content()).map_err(|e| problem_of(&e)),
            _ => Ok(method_not_allowed("DELETE")),
        },
        ["users"] => match *m {
            Method::GET => Ok(ok_json(
                StatusCode::OK,
                &manage.users(
                    req.query.get("q").map(String::as_str),
                    number(req, "offset")?.unwrap_or(0),
                    number(req, "limit")?,
                ),
            )),
            _ => Ok(method_not_allowed("GET")),
        },
        ["users", id] => match *m {
            Method::GET => done(StatusCode::OK, manage.user(id)),
            Method::PUT => {
                let doc: UserDoc = body(req)?;
                let (user, created) = manage.put_user(&caller, id, doc).await.map_err(|e| problem_of(&e))?;
                Ok(ok_json(if created { StatusCode::CREATED } else { StatusCode::OK }, &user))
            }
            Method::DELETE => manage.delete_user(&caller, id).await.map(|()| no_content()).map_err(|e| problem_of(&e)),
            _ => Ok(method_not_allowed("GET, PUT, DELETE")),
        },
        ["users", id, "tokens"] => match *m {
            Method::GET => {
                manage.user(id).map_err(|e| problem_of(&e))?;
                done(StatusCode::OK, manage.families(&Subject::User((*id).to_owned())).await)
            }
            _ => Ok(method_not_allowed("GET")),
        },
        ["users", id, "tokens", "revoke"] => match *m {
            Method::POST => {
                manage.user(id).map_err(|e| problem_of(&e))?;
                let subject = Subject::User((*id).to_owned());
                manage.revoke_tokens(&caller, &subject).await.map(|()| no_content()).map_err(|e| problem_of(&e))
            }
            _ => Ok(method_not_allowed("POST")),
        },
        ["profiles"] => match *m {
            Method::GET => {
                let deployment = console.app.provisioner().current();
                let profiles: Vec<_> = deployment.inventory.profiles.values().collect();
                Ok(ok_json(StatusCode::OK, &profiles))
            }
            _ => Ok(method_not_allowed("GET")),
        },
        ["profiles", name] => match *m {
            Method::PUT => {
                let doc: ProfileDoc = body(req)?;
                let (profile, created) = manage.put_profile(&caller, name, doc).await.map_err(|e| problem_of(&e))?;
                Ok(ok_json(if created { StatusCode::CREATED } else { StatusCode::OK }, &profile))
            }
            Method::DELETE => {
                manage.delete_profile(&caller, name).await.map(|()| no_content()).map_err(|e| problem_of(&e))
            }
            _ => Ok(method_not_allowed("PUT, DELETE")),
        },
        ["device-pools"] => pool_list::<DevicePoolDoc>(&manage, m),
        ["device-pools", name] => pool_route::<DevicePoolDoc>(&manage, &caller, req, name).await,
        ["cm-groups"] => pool_list::<CmGroupDoc>(&manage, m),
        ["cm-groups", name] => pool_route::<CmGroupDoc>(&manage, &caller, req, name).await,
        ["date-time-groups"] => pool_list::<DateTimeGroupDoc>(&manage, m),
        ["date-time-groups", name] => pool_route::<DateTimeGroupDoc>(&manage, &caller, req, name).await,
        ["phone-edge-trust", id] => match *m {
            Method::DELETE => done(StatusCode::OK, manage.remove_trust(&caller, id).await),
            _ => Ok(method_not_allowed("DELETE")),
        },
        ["cluster"] => match *m {
            Method::GET => {
                let deployment = console.app.provisioner().current();
                Ok(ok_json(StatusCode::OK, &ClusterDoc::of(&deployment.inventory.cluster)))
            }
            Method::PATCH => {
                let patch: ClusterPatch = body(req)?;
                let (changes, detail) = patch.changes();
                if changes.is_empty() {
                    return Err(problem(StatusCode::BAD_REQUEST, "Bad request", "nothing to change"));
                }
                manage.set_cluster(&caller, &changes, detail).await.map_err(|e| problem_of(&e))?;
                let deployment = console.app.provisioner().current();
                Ok(ok_json(StatusCode::OK, &ClusterDoc::of(&deployment.inventory.cluster)))
            }
            _ => Ok(method_not_allowed("GET, PATCH")),
        },
        ["phone-edge-trust"] => match *m {
            Method::GET => {
                let deployment = console.app.provisioner().current();
                Ok(ok_json(StatusCode::OK, &*deployment.phone_edge_trust))
            }
            Method::POST => {
                let pem = req.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                    v.starts_with("application/x-pem-file") || v.starts_with("application/pem-certificate-chain")
                });
                if !pem {
                    return Err(problem(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "Unsupported media type",
                        "send the certificates as PEM with Content-Type: application/pem-certificate-chain",
                    ));
                }
                let change = manage.add_trust(&caller, &req.body).await.map_err(|e| problem_of(&e))?;
                Ok(ok_json(if change.added.is_empty() { StatusCode::OK } else { StatusCode::CREATED }, &change))
            }
            _ => Ok(method_not_allowed("GET, POST")),
        },
        ["audit"] => match *m {
            Method::GET => {
                let before = number(req, "before")?.map(|b| b as i64);
                done(StatusCode::OK, manage.audit_trail(before, number(req, "limit")?).await)
            }
            _ => Ok(method_not_allowed("GET")),
        },
        ["accounts"] => match *m {
            Method::GET => {
                if who.account.role != Role::Admin {
                    return Err(problem(StatusCode::FORBIDDEN, "Forbidden", "only admin accounts see the accounts"));
                }
                let accounts = console.accounts.accounts().await.map_err(|e| problem_of(&e.into()))?;
                Ok(ok_json(StatusCode::OK, &accounts))
            }
            _ => Ok(method_not_allowed("GET")),
        },
        _ => Ok(not_found()),
    }
}

/// `GET /api/v1/device-pools` (and `cm-groups`, `date-time-groups`): every entry, whole (they are few).
fn pool_list<T: PoolEntry>(manage: &Manager<'_>, m: &Method) -> Answer {
    match *m {
        Method::GET => Ok(ok_json(StatusCode::OK, &manage.pools::<T>())),
        _ => Ok(method_not_allowed("GET")),
    }
}

/// One device pool, CM group or date/time group: read, create or replace (the inventory's keys, as JSON),
/// delete.
async fn pool_route<T: PoolEntry>(manage: &Manager<'_>, caller: &Caller, req: &Req, name: &str) -> Answer {
    match req.method {
        Method::GET => done(StatusCode::OK, manage.pool::<T>(name)),
        Method::PUT => {
            let doc: T = body(req)?;
            let (view, created) = manage.put_pool(caller, name, doc).await.map_err(|e| problem_of(&e))?;
            Ok(ok_json(if created { StatusCode::CREATED } else { StatusCode::OK }, &view))
        }
        Method::DELETE => {
            manage.delete_pool::<T>(caller, name).await.map(|()| no_content()).map_err(|e| problem_of(&e))
        }
        _ => Ok(method_not_allowed("GET, PUT, DELETE")),
    }
}

/// What `PATCH /api/v1/cluster` takes: the settings the CLI's `cluster set` changes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterPatch {
    sip_oauth_mode: Option<bool>,
    refresh_login_flow: Option<bool>,
    sip_oauth_port: Option<u16>,
    sip_mra_oauth_port: Option<u16>,
    access_token_minutes: Option<u32>,
    refresh_token_days: Option<u32>,
}

impl ClusterPatch {
    fn changes(&self) -> (Vec<ClusterChange>, String) {
        let mut changes = Vec::new();
        let mut said = Vec::new();
        if let Some(v) = self.sip_oauth_mode {
            changes.push(ClusterChange::SipOAuthMode(v));
            said.push(format!("sip_oauth_mode = {v}"));
        }
        if let Some(v) = self.refresh_login_flow {
            changes.push(ClusterChange::RefreshLoginFlow(v));
            said.push(format!("refresh_login_flow = {v}"));
        }
        if let Some(v) = self.sip_oauth_port {
            changes.push(ClusterChange::SipOAuthPort(v));
            said.push(format!("sip_oauth_port = {v}"));
        }
        if let Some(v) = self.sip_mra_oauth_port {
            changes.push(ClusterChange::SipMraOAuthPort(v));
            said.push(format!("sip_mra_oauth_port = {v}"));
        }
        if let Some(v) = self.access_token_minutes {
            changes.push(ClusterChange::AccessTokenMinutes(v));
            said.push(format!("access_token_minutes = {v}"));
        }
        if let Some(v) = self.refresh_token_days {
            changes.push(ClusterChange::RefreshTokenDays(v));
            said.push(format!("refresh_token_days = {v}"));
        }
        (changes, said.join(", "))
    }
}

/// New codes as CSV for a mail merge: device, owner, code, expiry (RFC 3339).
pub fn codes_csv(codes: &[NewCode]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["device", "owner", "code", "expires"]);
    for c in codes {
        let expires = crate::util::time::rfc3339_utc(c.expires);
        let owner = spreadsheet_safe(c.owner.as_deref().unwrap_or(""));
        let _ = w.write_record([c.device.as_str(), owner.as_str(), c.code.as_str(), expires.as_str()]);
    }
    w.into_inner().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// A field a spreadsheet will not run as a formula (OWASP "CSV injection"): one that starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a leading `'`. User ids may start with anything.
fn spreadsheet_safe(field: &str) -> String {
    match field.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{field}"),
        _ => field.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_never_become_formulas() {
        assert_eq!(spreadsheet_safe("jsmith"), "jsmith");
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("@SUM(1)"), "'@SUM(1)");
        assert_eq!(spreadsheet_safe(""), "");
    }
}
