//! The web console: server-rendered pages (minijinja, HTML auto-escaping), forms that post back, a style
//! sheet and one small script (reading a chosen CSV file into the import form), all served from this
//! binary: nothing from elsewhere, nothing built at run time.
//!
//! Every page but `/login` needs a session; every form carries the session's CSRF token; read-only accounts
//! see no form that changes something and are refused (403) if they post one anyway.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};

use crate::app::manage::{DeviceQuery, DeviceStatus, ManageError};
use crate::provision::import::Options;
use crate::provision::subject::Subject;
use crate::server::console::api::codes_csv;
use crate::server::console::{Authenticated, Console, LoginRefusal, Req, expired_cookie, status_of};
use crate::server::response::{Body, with_body};
use crate::util::time::{rfc3339_utc, unix_now};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("dashboard.html", include_str!("templates/dashboard.html")),
    ("devices.html", include_str!("templates/devices.html")),
    ("device.html", include_str!("templates/device.html")),
    ("codes.html", include_str!("templates/codes.html")),
    ("import.html", include_str!("templates/import.html")),
    ("users.html", include_str!("templates/users.html")),
    ("trust.html", include_str!("templates/trust.html")),
    ("accounts.html", include_str!("templates/accounts.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("message.html", include_str!("templates/message.html")),
];

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not compile");
            }
        }
        env.add_filter("time", |t: i64| rfc3339_utc(t).replace('T', " ").replace('Z', " UTC"));
        env
    })
}

fn html(status: StatusCode, page: &str, ctx: Value) -> Response<Body> {
    match env().get_template(page).and_then(|t| t.render(ctx)) {
        Ok(body) => with_body(status, Bytes::from(body), "text/html; charset=utf-8"),
        Err(e) => {
            tracing::error!(template = page, error = %e, "console page failed to render");
            with_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(b"internal error\n"),
                "text/plain; charset=utf-8",
            )
        }
    }
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A page that says what went wrong, in the console's frame.
fn message(
    who: Option<&Authenticated>,
    status: StatusCode,
    title: &str,
    text: &str,
    problems: &[String],
) -> Response<Body> {
    html(status, "message.html", context! { who => who.map(who_ctx), title, text, problems => problems.to_vec() })
}

fn failure(who: &Authenticated, e: &ManageError) -> Response<Body> {
    let (status, title) = status_of(e);
    let problems = match e {
        ManageError::Invalid(p) => p.clone(),
        _ => Vec::new(),
    };
    let text = match e {
        ManageError::Invalid(_) => "The change would make the inventory invalid; nothing was written.".to_owned(),
        ManageError::Internal(detail) => {
            tracing::error!(error = %detail, "console request failed");
            "The server failed; its log says why.".to_owned()
        }
        other => other.to_string(),
    };
    message(Some(who), status, title, &text, &problems)
}

fn who_ctx(who: &Authenticated) -> Value {
    context! {
        name => who.account.name.clone(),
        role => who.account.role.as_str(),
        can_change => who.account.role.can_change(),
        is_admin => who.account.role.can_manage_accounts(),
        csrf => who.csrf.clone(),
    }
}

pub async fn handle(console: &Console, req: &Req) -> Response<Body> {
    match (req.method.clone(), req.path.as_str()) {
        (Method::GET, "/static/console.css") => return static_file(CSS, "text/css; charset=utf-8"),
        (Method::GET, "/static/console.js") => return static_file(JS, "text/javascript; charset=utf-8"),
        (Method::GET, "/login") => return html(StatusCode::OK, "login.html", context! {}),
        (Method::POST, "/login") => return login(console, req).await,
        _ => {}
    }
    let who = match console.authenticate(req).await {
        Ok(Some(who)) if who.csrf.is_some() => who,
        Ok(_) => return if req.method == Method::GET { redirect("/login") } else { redirect_login_expired() },
        Err(e) => {
            return message(None, StatusCode::SERVICE_UNAVAILABLE, "Unavailable", &e.to_string(), &[]);
        }
    };
    if req.method == Method::POST {
        let form = req.form();
        if !console.csrf_ok(&who, req, Some(&form)) {
            tracing::warn!(target: "sipcfg::admin", account = %who.account.name, address = %req.peer.ip(), path = %req.path, "form refused: no valid CSRF token");
            return message(
                Some(&who),
                StatusCode::FORBIDDEN,
                "Forbidden",
                "This form was not sent from this console's own page (its CSRF token is missing or wrong). Reload the page and try again.",
                &[],
            );
        }
        if req.path != "/logout" && !who.account.role.can_change() {
            return message(
                Some(&who),
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!("The account {:?} is read-only: it cannot change anything.", who.account.name),
                &[],
            );
        }
        return post(console, req, &who, &form).await;
    }
    if req.method != Method::GET {
        return message(
            Some(&who),
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Use the console's pages.",
            &[],
        );
    }
    get(console, req, &who).await
}

fn redirect_login_expired() -> Response<Body> {
    redirect("/login?expired=1")
}

fn static_file(text: &'static str, content_type: &'static str) -> Response<Body> {
    with_body(StatusCode::OK, Bytes::from_static(text.as_bytes()), content_type)
}

async fn login(console: &Console, req: &Req) -> Response<Body> {
    // A login posted from another site is refused (login CSRF); browsers say where a request comes from.
    if let Some(site) = req.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return html(
            StatusCode::FORBIDDEN,
            "login.html",
            context! { error => "This login form was sent from another site." },
        );
    }
    let form = req.form();
    let name = form.get("name").map(String::as_str).unwrap_or("").trim();
    let password = form.get("password").map(String::as_str).unwrap_or("");
    match console.login(req, name, password).await {
        Ok((secret, _)) => {
            let mut r = redirect("/");
            if let Ok(v) = HeaderValue::from_str(&console.session_cookie(&secret)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(LoginRefusal::Wrong) => html(
            StatusCode::UNAUTHORIZED,
            "login.html",
            context! { error => "Unknown account or wrong password.", name },
        ),
        Err(LoginRefusal::TooMany(wait)) => {
            let mut r = html(
                StatusCode::TOO_MANY_REQUESTS,
                "login.html",
                context! { error => format!("Too many failed logins: try again in {wait} s."), name },
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
            r
        }
        Err(LoginRefusal::Store(e)) => {
            tracing::error!(error = %e, "login failed: store");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                "login.html",
                context! { error => "The account store cannot be reached; try again shortly.", name },
            )
        }
    }
}

async fn get(console: &Console, req: &Req, who: &Authenticated) -> Response<Body> {
    let manage = console.app.manage();
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let offset = req.query.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let w = who_ctx(who);
    match segments.as_slice() {
        [] => {
            let summary = match manage.summary(7).await {
                Ok(s) => s,
                Err(e) => return failure(who, &e),
            };
            let now = unix_now() as i64;
            let certs: Vec<Value> = console
                .app
                .status()
                .certificates()
                .certs
                .iter()
                .map(|c| {
                    let days = (c.not_after - now).div_euclid(86_400);
                    context! { role => c.role.as_str(), subject => c.subject.clone(), not_after => c.not_after, days, soon => days < 30 }
                })
                .collect();
            let refusals = manage.recent_refusals(10);
            let audit = manage.audit_trail(None, Some(10)).await.unwrap_or_default();
            html(
                StatusCode::OK,
                "dashboard.html",
                context! { who => w, page => "dashboard", summary => Serde(summary), certs, refusals => Serde(refusals), audit => Serde(audit) },
            )
        }
        ["devices"] => {
            let status = req.query.get("status").and_then(|s| DeviceStatus::parse(s));
            let search = req.query.get("q").cloned().filter(|q| !q.trim().is_empty());
            let query = DeviceQuery { search: search.clone(), status, offset, limit: Some(50) };
            match manage.devices(&query).await {
                Ok(devices) => html(
                    StatusCode::OK,
                    "devices.html",
                    context! {
                        who => w, page => "devices", devices => Serde(devices), q => search.unwrap_or_default(),
                        status => status.map(DeviceStatus::as_str).unwrap_or(""),
                        statuses => DeviceStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    },
                ),
                Err(e) => failure(who, &e),
            }
        }
        ["devices", name] => device_page(console, who, name, None).await,
        ["devices", name, "delete"] => match manage.device(name).await {
            Ok(device) => html(
                StatusCode::OK,
                "message.html",
                context! {
                    who => w, title => format!("Delete {}?", device.summary.name), confirm_delete => device.summary.name,
                    text => "The device is removed from the inventory, its outstanding activation codes are retired and its tokens revoked. This cannot be undone.",
                },
            ),
            Err(e) => failure(who, &e),
        },
        ["codes"] => html(
            StatusCode::OK,
            "codes.html",
            context! { who => w, page => "codes", devices => req.query.get("devices").cloned().unwrap_or_default() },
        ),
        ["import"] => html(StatusCode::OK, "import.html", context! { who => w, page => "import" }),
        ["users"] => {
            let users = manage.users(req.query.get("q").map(String::as_str), offset, Some(50));
            html(
                StatusCode::OK,
                "users.html",
                context! { who => w, page => "users", users => Serde(users), q => req.query.get("q").cloned().unwrap_or_default() },
            )
        }
        ["trust"] => {
            let deployment = console.app.provisioner().current();
            html(
                StatusCode::OK,
                "trust.html",
                context! { who => w, page => "trust", certs => Serde(&*deployment.phone_edge_trust) },
            )
        }
        ["accounts"] => {
            if !who.account.role.can_manage_accounts() {
                return message(
                    Some(who),
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "Only admin accounts see the accounts.",
                    &[],
                );
            }
            match console.accounts.accounts().await {
                Ok(accounts) => html(
                    StatusCode::OK,
                    "accounts.html",
                    context! { who => w, page => "accounts", accounts => Serde(accounts) },
                ),
                Err(e) => failure(who, &e.into()),
            }
        }
        ["audit"] => {
            let before = req.query.get("before").and_then(|b| b.parse().ok());
            match manage.audit_trail(before, Some(50)).await {
                Ok(entries) => {
                    let next = if entries.len() == 50 { entries.last().map(|e| e.id) } else { None };
                    html(
                        StatusCode::OK,
                        "audit.html",
                        context! { who => w, page => "audit", entries => Serde(entries), next },
                    )
                }
                Err(e) => failure(who, &e),
            }
        }
        _ => message(Some(who), StatusCode::NOT_FOUND, "Not found", "No such page.", &[]),
    }
}

async fn device_page(console: &Console, who: &Authenticated, name: &str, new_code: Option<Value>) -> Response<Body> {
    let manage = console.app.manage();
    let device = match manage.device(name).await {
        Ok(d) => d,
        Err(e) => return failure(who, &e),
    };
    let state = match manage.device_state(name).await {
        Ok(s) => s,
        Err(e) => return failure(who, &e),
    };
    let rendered = manage.rendered(name).await.unwrap_or_else(|e| format!("(cannot render: {e})"));
    html(
        StatusCode::OK,
        "device.html",
        context! { who => who_ctx(who), page => "devices", device => Serde(device), state => Serde(state), rendered, new_code },
    )
}

async fn post(console: &Console, req: &Req, who: &Authenticated, form: &HashMap<String, String>) -> Response<Body> {
    let manage = console.app.manage();
    let caller = who.caller();
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let back = |name: &str| redirect(&format!("/devices/{}", urlencode(name)));
    let result = match segments.as_slice() {
        ["logout"] => {
            console.logout(req).await;
            let mut r = redirect("/login");
            if let Ok(v) = HeaderValue::from_str(&expired_cookie()) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return r;
        }
        ["devices", name, "code"] => {
            let days = form.get("valid_days").and_then(|d| d.parse().ok());
            match manage.create_code(&caller, name, days).await {
                Ok(code) => {
                    let new_code = context! { code => code.code, id => code.id, expires => code.expires, qr_svg => Value::from_safe_string(code.qr_svg) };
                    return device_page(console, who, name, Some(new_code)).await;
                }
                Err(e) => Err(e),
            }
        }
        ["devices", name, action @ ("enable" | "disable")] => {
            manage.set_enabled(&caller, name, *action == "enable").await.map(|_| back(name))
        }
        ["devices", name, "revoke"] => match manage.device_subject(name) {
            Ok(subject) => manage.revoke_tokens(&caller, &subject).await.map(|()| back(name)),
            Err(e) => Err(e),
        },
        ["devices", name, "delete"] => manage.delete_device(&caller, name).await.map(|()| redirect("/devices")),
        ["users", id, "revoke"] => match manage.user(id) {
            Ok(_) => {
                // Only back to a device page of this console (never elsewhere: "//host" and "/\\host" leave it).
                let back = form
                    .get("back")
                    .filter(|b| {
                        b.strip_prefix("/devices/").is_some_and(|n| {
                            n.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
                        })
                    })
                    .cloned();
                manage
                    .revoke_tokens(&caller, &Subject::User((*id).to_owned()))
                    .await
                    .map(|()| redirect(back.as_deref().unwrap_or("/users")))
            }
            Err(e) => Err(e),
        },
        ["codes", id, "revoke"] => {
            let device = form.get("device").cloned().unwrap_or_default();
            manage.revoke_code(&caller, id).await.map(|()| back(&device))
        }
        ["codes"] => {
            let names: Vec<String> = form
                .get("devices")
                .map(|d| {
                    d.split(|c: char| c.is_whitespace() || c == ',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let names = if names.is_empty() { req.form_all("device") } else { names };
            let days = form.get("valid_days").and_then(|d| d.parse().ok());
            match manage.create_codes(&caller, &names, days).await {
                Ok(codes) => {
                    let mut r = with_body(StatusCode::OK, Bytes::from(codes_csv(&codes)), "text/csv; charset=utf-8");
                    r.headers_mut().insert(
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_static("attachment; filename=\"activation-codes.csv\""),
                    );
                    return r;
                }
                Err(e) => Err(e),
            }
        }
        ["import"] => {
            let csv = form.get("csv").cloned().unwrap_or_default();
            let options = Options {
                dry_run: form.get("commit").is_none(),
                update: form.contains_key("update"),
                create_users: form.contains_key("create_users"),
            };
            return match manage.import_csv(&caller, csv.as_bytes(), options).await {
                Ok(report) => html(
                    StatusCode::OK,
                    "import.html",
                    context! { who => who_ctx(who), page => "import", report => Serde(report), csv, committed => !options.dry_run, update => options.update, create_users => options.create_users },
                ),
                Err(crate::app::manage::ImportFailure::Rows(rows)) => html(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "import.html",
                    context! { who => who_ctx(who), page => "import", rows, csv, update => options.update, create_users => options.create_users },
                ),
                Err(crate::app::manage::ImportFailure::Other(e)) => failure(who, &e),
            };
        }
        _ => Err(ManageError::NotFound("no such form".into())),
    };
    match result {
        Ok(r) => r,
        Err(e) => failure(who, &e),
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
