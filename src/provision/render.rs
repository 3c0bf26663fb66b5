//! Rendering: a device's configuration file from the templates, its profile, owner and cluster.
//!
//! Templates are minijinja (Jinja2 syntax) with strict undefined variables and XML escaping of every
//! value. A device's template is the first that exists of `models/<model id>.xml.j2`,
//! `families/<family>.xml.j2` and `base.xml.j2`; model and family templates usually `{% extends %}` the next
//! one up and override blocks. A template of the same relative name in the override folder replaces the
//! shipped one, so a site changes one model without copying the rest. Every rendered file is checked to be
//! well-formed XML before anyone sees it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::provision::inventory::{
    CallManager, Cluster, Device, Inventory, PoolSettings, Profile, ResolvedServices, SecurityMode, ServiceUrls,
    Transport, User,
};
use crate::provision::model::{Features, PHONE_TYPES, PhoneType};
use crate::provision::trust::TrustCert;
use crate::provision::xml::ShapeCache;

pub const TEMPLATE_SUFFIX: &str = ".xml.j2";
const BASE_TEMPLATE: &str = "base.xml.j2";
/// The template of `XMLDefault.cnf.xml`.
pub const DEFAULT_TEMPLATE: &str = "xmldefault.xml.j2";
const XML_ESCAPE: &str = "xml";
/// Template files larger than this are refused when loading.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// A template that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct TemplateErrors(pub Vec<TemplateError>);

/// Why a device's file could not be rendered. The phone sees a 500; the log gets this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("device {device}: template {template}: {message}")]
    Template { device: String, template: String, message: String },
    #[error("device {device}: template {template} produced malformed XML: {message}")]
    InvalidXml { device: String, template: String, message: String },
    #[error("device {device}: profile {profile:?} is missing")]
    MissingProfile { device: String, profile: String },
}

/// The loaded template set. Immutable: a change of templates on disk means loading a new set.
pub struct Templates {
    env: Environment<'static>,
    dir: PathBuf,
    /// Where each template was read from (shipped folder or override), for error messages.
    origins: BTreeMap<String, PathBuf>,
    /// The template each phone type renders with (by type id), resolved once when the set loads.
    resolved: BTreeMap<&'static str, String>,
    /// The shapes of rendered files already proven well-formed (see [`ShapeCache`]).
    shapes: ShapeCache,
}

impl Templates {
    /// Loads and compiles every `*.xml.j2` under `dir`, then under `override_dir`, whose templates replace
    /// shipped ones of the same relative name.
    pub fn load(dir: &Path, override_dir: Option<&Path>) -> Result<Templates, TemplateErrors> {
        let mut files = BTreeMap::new();
        let mut errors = Vec::new();
        collect(dir, dir, &mut files, &mut errors);
        if let Some(o) = override_dir {
            collect(o, o, &mut files, &mut errors);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Every template produces XML: escape every value, whatever the file is called.
        env.set_auto_escape_callback(|_| AutoEscape::Custom(XML_ESCAPE.into()));
        env.set_formatter(xml_formatter);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| TemplateErrors(vec![TemplateError { file: dir.to_owned(), message: e.to_string() }]))?;
        env.set_syntax(syntax);
        let mut origins = BTreeMap::new();
        for (name, (path, source)) in files {
            if let Err(e) = env.add_template_owned(name.clone(), source) {
                errors.push(TemplateError { file: path.clone(), message: describe(&e) });
            }
            origins.insert(name, path);
        }
        for required in [BASE_TEMPLATE, DEFAULT_TEMPLATE] {
            if !origins.contains_key(required) {
                errors.push(TemplateError {
                    file: dir.join(required),
                    message: "missing: every template set needs it".into(),
                });
            }
        }
        if errors.is_empty() {
            let resolve = |t: &PhoneType| {
                let model = format!("models/{}{TEMPLATE_SUFFIX}", t.id);
                let family = format!("families/{}{TEMPLATE_SUFFIX}", t.family);
                [model, family]
                    .into_iter()
                    .find(|n| origins.contains_key(n))
                    .unwrap_or_else(|| BASE_TEMPLATE.to_owned())
            };
            let resolved = PHONE_TYPES.iter().map(|t| (t.id, resolve(t))).collect();
            Ok(Templates { env, dir: dir.to_owned(), origins, resolved, shapes: ShapeCache::default() })
        } else {
            Err(TemplateErrors(errors))
        }
    }

    /// The file a template was read from.
    pub fn origin(&self, name: &str) -> Option<&Path> {
        self.origins.get(name).map(PathBuf::as_path)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The template a phone type renders with: model, then family, then base.
    pub fn template_for(&self, phone_type: &PhoneType) -> &str {
        self.resolved.get(phone_type.id).map_or(BASE_TEMPLATE, String::as_str)
    }

    /// Renders a device's configuration file and checks that it is well-formed XML.
    pub fn render(&self, inventory: &Inventory, device: &Device, trust: &[TrustCert]) -> Result<String, RenderError> {
        let device_name = device.name.to_string();
        let profile = inventory.profile_of(device).ok_or_else(|| RenderError::MissingProfile {
            device: device_name.clone(),
            profile: device.profile.clone(),
        })?;
        let template = self.template_for(device.phone_type);
        let pool = inventory.pool_settings(device);
        let ctx = RenderContext::new(&inventory.cluster, device, profile, inventory.owner_of(device), pool, trust);
        self.render_checked(&device_name, template, minijinja::value::Serde(&ctx))
    }

    /// Renders `XMLDefault.cnf.xml` from the cluster settings.
    pub fn render_default(&self, inventory: &Inventory, trust: &[TrustCert]) -> Result<String, RenderError> {
        let ctx = DefaultContext {
            cluster: ClusterView::new(&inventory.cluster),
            oauth: inventory.cluster.sip_oauth_mode,
            phone_edge_trust: trust.iter().map(TrustView::from).collect(),
        };
        self.render_checked("XMLDefault", DEFAULT_TEMPLATE, minijinja::value::Serde(&ctx))
    }

    fn render_checked(
        &self,
        what: &str,
        template: &str,
        ctx: impl Into<minijinja::Value>,
    ) -> Result<String, RenderError> {
        let fail = |message| RenderError::Template { device: what.to_owned(), template: template.to_owned(), message };
        let tmpl = self.env.get_template(template).map_err(|e| fail(describe(&e)))?;
        let mut out = Recorder { doc: Vec::with_capacity(RENDER_BUFFER), values: Vec::new() };
        UNESCAPED.set(false);
        let rendered = tmpl.render_captured_to(ctx, &mut out).map(drop);
        let unescaped = UNESCAPED.replace(false);
        rendered.map_err(|e| fail(describe(&e)))?;
        let Recorder { doc, values } = out;
        // Every write was a `str`, so the bytes are UTF-8.
        let doc = String::from_utf8(doc).map_err(|e| fail(e.to_string()))?;
        let values = (!unescaped).then_some(values.as_slice());
        self.shapes.check(&doc, values).map_err(|message| RenderError::InvalidXml {
            device: what.to_owned(),
            template: template.to_owned(),
            message,
        })?;
        Ok(doc)
    }
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, (PathBuf, String)>, errors: &mut Vec<TemplateError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors
                .push(TemplateError { file: dir.to_owned(), message: format!("cannot read the template folder: {e}") });
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect(root, &path, files, errors);
            continue;
        }
        let Some(rel) = path.strip_prefix(root).ok().and_then(|r| r.to_str()) else {
            continue;
        };
        if !rel.ends_with(TEMPLATE_SUFFIX) {
            continue;
        }
        if entry.metadata().map_or(0, |m| m.len()) > MAX_TEMPLATE_BYTES {
            errors.push(TemplateError { file: path, message: format!("larger than {MAX_TEMPLATE_BYTES} bytes") });
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(source) => {
                files.insert(rel.replace('\\', "/"), (path, source));
            }
            Err(e) => errors.push(TemplateError { file: path, message: format!("cannot read: {e}") }),
        }
    }
}

thread_local! {
    /// Set while [`xml_formatter`] writes an escaped value: the [`Recorder`] of the render in progress on
    /// this thread tells the values' bytes from the template's own.
    static ESCAPING: Cell<bool> = const { Cell::new(false) };
    /// Set when a render wrote a value unescaped (`|safe`, a macro's output, auto-escaping turned off): its
    /// file gets the whole well-formedness check.
    static UNESCAPED: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`ESCAPING`] however the write ends.
struct Escaping;

impl Escaping {
    fn start() -> Escaping {
        ESCAPING.set(true);
        Escaping
    }
}

impl Drop for Escaping {
    fn drop(&mut self) {
        ESCAPING.set(false);
    }
}

/// A render's first buffer: a phone's configuration is about 7 KB.
const RENDER_BUFFER: usize = 8192;

/// A render's output, and which of its bytes escaped values wrote (adjacent values make one range).
struct Recorder {
    doc: Vec<u8>,
    values: Vec<std::ops::Range<usize>>,
}

impl std::io::Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let start = self.doc.len();
        if ESCAPING.get() && !buf.is_empty() {
            match self.values.last_mut() {
                Some(last) if last.end == start => last.end += buf.len(),
                _ => self.values.push(start..start + buf.len()),
            }
        }
        self.doc.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a value with XML escaping (`&`, `<`, `>`, `"`, `'`); `|safe` values go out as they are. Strings
/// are escaped where they lie and numbers and booleans written as they are (nothing in them to escape):
/// only other values (sequences, maps) are formatted into a temporary string first.
fn xml_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    if value.is_safe() || !matches!(state.auto_escape(), AutoEscape::Custom(name) if name == XML_ESCAPE) {
        UNESCAPED.set(true);
        return minijinja::escape_formatter(out, state, value);
    }
    let _escaping = Escaping::start();
    match value.kind() {
        ValueKind::None => Ok(()),
        ValueKind::Number | ValueKind::Bool => write!(out, "{value}").map_err(minijinja::Error::from),
        _ => match value.as_str() {
            Some(text) => write_escaped(out, text),
            None => write_escaped(out, &value.to_string()),
        },
    }
}

/// `text` with the five XML special characters as references.
fn write_escaped(out: &mut minijinja::Output, text: &str) -> Result<(), minijinja::Error> {
    let mut from = 0;
    for (i, c) in text.bytes().enumerate() {
        let reference = match c {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&apos;",
            _ => continue,
        };
        out.write_str(&text[from..i])?;
        out.write_str(reference)?;
        from = i + 1;
    }
    out.write_str(&text[from..])?;
    Ok(())
}

/// A minijinja error with its line and the chain of causes.
fn describe(e: &minijinja::Error) -> String {
    let mut msg = match e.line() {
        Some(line) => format!("line {line}: {}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// What a template sees. Codes are precomputed so templates never translate enums themselves.
#[derive(Serialize)]
struct RenderContext<'a> {
    device: DeviceView<'a>,
    profile: ProfileView<'a>,
    owner: Option<UserView<'a>>,
    cluster: ClusterView<'a>,
    /// The device's pool, every setting resolved (the pool's, else the cluster's): what the `devicePool`
    /// element and the locales render from.
    device_pool: PoolView<'a>,
    /// SIP OAuth in force for this device: the cluster mode is on and the profile enables OAuth.
    oauth: bool,
    /// The Phone-Edge-Trust certificates phones use to validate this server.
    phone_edge_trust: Vec<TrustView<'a>>,
    /// The phone service URLs in force (the device's, else its pool's, else the cluster's; empty when none
    /// sets one).
    services: ResolvedServices<'a>,
}

#[derive(Serialize)]
struct DefaultContext<'a> {
    cluster: ClusterView<'a>,
    oauth: bool,
    phone_edge_trust: Vec<TrustView<'a>>,
}

/// The `[cluster]` keys, with the call managers as phones see them: every value resolved here, so that no
/// template works out a default. Field by field rather than `#[serde(flatten)]` of [`Cluster`]: flattening
/// goes through serde's map path, which made minijinja allocate and sort a key for every field of every
/// render (6% of a render); a test keeps these keys equal to `Cluster`'s.
#[derive(Serialize)]
struct ClusterView<'a> {
    name: &'a str,
    sip_oauth_mode: bool,
    refresh_login_flow: bool,
    access_token_minutes: u32,
    refresh_token_days: u32,
    sip_port: u16,
    secured_sip_port: u16,
    sip_oauth_port: u16,
    sip_mra_oauth_port: u16,
    ethernet_phone_port: u16,
    ntp_servers: &'a [String],
    time_zone: &'a str,
    date_template: &'a str,
    user_locale: &'a str,
    network_locale: &'a str,
    load_server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    services: Option<&'a ServiceUrls>,
    call_managers: Vec<CallManagerView<'a>>,
}

#[derive(Serialize)]
struct CallManagerView<'a> {
    /// What phones register to (`processNodeName`).
    address: &'a str,
    /// The node's name for people: `name`, else the address.
    name: &'a str,
    /// The node's OAuth ports: its own, else the cluster's.
    sip_oauth_port: u16,
    sip_mra_oauth_port: u16,
}

impl<'a> CallManagerView<'a> {
    fn new(cluster: &'a Cluster, cm: &'a CallManager) -> Self {
        let ports = cm.oauth_ports(cluster);
        CallManagerView {
            address: &cm.address,
            name: cm.label(),
            sip_oauth_port: ports.sip,
            sip_mra_oauth_port: ports.mra,
        }
    }
}

impl<'a> ClusterView<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        let call_managers = cluster.call_managers.iter().map(|cm| CallManagerView::new(cluster, cm)).collect();
        ClusterView {
            name: &cluster.name,
            sip_oauth_mode: cluster.sip_oauth_mode,
            refresh_login_flow: cluster.refresh_login_flow,
            access_token_minutes: cluster.access_token_minutes,
            refresh_token_days: cluster.refresh_token_days,
            sip_port: cluster.sip_port,
            secured_sip_port: cluster.secured_sip_port,
            sip_oauth_port: cluster.sip_oauth_port,
            sip_mra_oauth_port: cluster.sip_mra_oauth_port,
            ethernet_phone_port: cluster.ethernet_phone_port,
            ntp_servers: &cluster.ntp_servers,
            time_zone: &cluster.time_zone,
            date_template: &cluster.date_template,
            user_locale: &cluster.user_locale,
            network_locale: &cluster.network_locale,
            load_server: &cluster.load_server,
            services: (!cluster.services.is_empty()).then_some(&cluster.services),
            call_managers,
        }
    }
}

/// A device's pool as templates see it (`device_pool`): its name (none without a pool), its CM group's call
/// managers with their ports, its date/time group's settings and its locales, each resolved.
#[derive(Serialize)]
struct PoolView<'a> {
    name: Option<&'a str>,
    call_managers: Vec<CallManagerView<'a>>,
    date_template: std::borrow::Cow<'a, str>,
    time_zone: &'a str,
    ntp_servers: &'a [String],
    user_locale: &'a str,
    network_locale: &'a str,
}

impl<'a> PoolView<'a> {
    fn new(cluster: &'a Cluster, pool: PoolSettings<'a>) -> Self {
        PoolView {
            name: pool.name,
            call_managers: pool.call_managers.into_iter().map(|cm| CallManagerView::new(cluster, cm)).collect(),
            date_template: pool.date_template,
            time_zone: pool.time_zone,
            ntp_servers: pool.ntp_servers,
            user_locale: pool.user_locale,
            network_locale: pool.network_locale,
        }
    }
}

#[derive(Serialize)]
struct TrustView<'a> {
    subject: &'a str,
    issuer: &'a str,
    sha256: &'a str,
    not_after: i64,
    der_base64: &'a str,
}

impl<'a> From<&'a TrustCert> for TrustView<'a> {
    fn from(c: &'a TrustCert) -> Self {
        TrustView {
            subject: &c.subject,
            issuer: &c.issuer,
            sha256: &c.sha256,
            not_after: c.not_after,
            der_base64: c.der_base64(),
        }
    }
}

#[derive(Serialize)]
struct DeviceView<'a> {
    name: &'a str,
    mac: Option<&'a str>,
    prefix: &'static str,
    model: &'static str,
    model_id: &'static str,
    family: &'static str,
    description: &'a str,
    lines: Vec<LineView<'a>>,
    /// The buttons after the lines: speed dials, then BLF speed dials, numbered on from the last line.
    buttons: Vec<ButtonView<'a>>,
    /// The key expansion modules attached, from 1.
    key_expansion_modules: Vec<ModuleView>,
    /// What the phone type supports.
    features: Features,
    /// Mobile and Remote Access: activation-code onboarding allowed, and its service domain.
    mra: bool,
    mra_service_domain: &'a str,
}

/// CUCM's `featureID` of a speed dial button.
const FEATURE_SPEED_DIAL: u8 = 2;
/// CUCM's `featureID` of a BLF speed dial button.
const FEATURE_BLF_SPEED_DIAL: u8 = 21;

#[derive(Serialize)]
struct ButtonView<'a> {
    /// The button's number: the phone's keys first, then the modules' keys.
    index: usize,
    /// `speed-dial` or `blf`.
    kind: &'static str,
    feature_id: u8,
    /// The number or SIP URI dialled (and, for BLF, watched).
    number: &'a str,
    label: &'a str,
}

#[derive(Serialize)]
struct ModuleView {
    index: usize,
    model: &'static str,
}

#[derive(Serialize)]
struct LineView<'a> {
    index: usize,
    dn: &'a str,
    display_name: &'a str,
    label: &'a str,
}

#[derive(Serialize)]
struct ProfileView<'a> {
    name: &'a str,
    phone_type: &'a str,
    security_mode: SecurityMode,
    transport: Transport,
    oauth: bool,
    digest_authentication: bool,
    tftp_encrypted_config: bool,
    description: &'a str,
    security_mode_code: u8,
    transport_code: u8,
}

/// The owner as templates see it: every field, empty ones too (templates fail on an undefined value).
#[derive(Serialize)]
struct UserView<'a> {
    id: &'a str,
    name: &'a str,
    department: &'a str,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(u: &'a User) -> Self {
        UserView { id: &u.id, name: &u.name, department: &u.department }
    }
}

impl<'a> RenderContext<'a> {
    fn new(
        cluster: &'a Cluster,
        device: &'a Device,
        profile: &'a Profile,
        owner: Option<&'a User>,
        pool: PoolSettings<'a>,
        trust: &'a [TrustCert],
    ) -> Self {
        let lines = device
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| LineView {
                index: i + 1,
                dn: &l.dn,
                display_name: if l.display_name.is_empty() {
                    owner.map_or("", |o| o.name.as_str())
                } else {
                    &l.display_name
                },
                label: if l.label.is_empty() { &l.dn } else { &l.label },
            })
            .collect();
        let speed_dials = device.speed_dials.iter().map(|sd| ("speed-dial", FEATURE_SPEED_DIAL, &sd.number, &sd.label));
        let blf = device.blf_speed_dials.iter().map(|b| ("blf", FEATURE_BLF_SPEED_DIAL, &b.destination, &b.label));
        let buttons = speed_dials
            .chain(blf)
            .enumerate()
            .map(|(i, (kind, feature_id, number, label))| ButtonView {
                index: device.lines.len() + i + 1,
                kind,
                feature_id,
                number,
                label: if label.is_empty() { number } else { label },
            })
            .collect();
        let features = device.phone_type.features;
        let key_expansion_modules =
            (1..=device.key_expansion_modules).map(|index| ModuleView { index, model: features.kem_model }).collect();
        let services = ResolvedServices::resolve(&[device.services.as_deref(), pool.services, Some(&cluster.services)]);
        RenderContext {
            device: DeviceView {
                name: device.name.as_str(),
                mac: device.name.mac(),
                prefix: device.phone_type.prefix.as_str(),
                model: device.phone_type.name,
                model_id: device.phone_type.id,
                family: device.phone_type.family,
                description: &device.description,
                lines,
                buttons,
                key_expansion_modules,
                features,
                mra: device.allow_activation_code_via_mra,
                mra_service_domain: &device.mra_service_domain,
            },
            profile: ProfileView {
                name: &profile.name,
                phone_type: &profile.phone_type,
                security_mode: profile.security_mode,
                transport: profile.transport,
                oauth: profile.oauth,
                digest_authentication: profile.digest_authentication,
                tftp_encrypted_config: profile.tftp_encrypted_config,
                description: &profile.description,
                security_mode_code: profile.security_mode.code(),
                transport_code: profile.transport.code(),
            },
            owner: owner.map(UserView::from),
            cluster: ClusterView::new(cluster),
            device_pool: PoolView::new(cluster, pool),
            oauth: cluster.sip_oauth_mode && profile.oauth,
            phone_edge_trust: trust.iter().map(TrustView::from).collect(),
            services,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::filename::DeviceName;

    const TWO_SITES: &str = r#"
        [cluster]
        name = "c"
        sip_oauth_mode = true
        time_zone = "Greenwich Standard Time"
        ntp_servers = ["ntp.example.test"]
        call_managers = [
          { address = "cucm-a.example.test", name = "a" },
          { address = "cucm-b.example.test", name = "b", sip_oauth_port = 5092 },
        ]
        [profiles.oauth]
        phone_type = "Cisco 8851"
        security_mode = "encrypted"
        transport = "tls"
        oauth = true
        [cm_groups.A-first]
        call_managers = ["a", "b"]
        [cm_groups.B-first]
        call_managers = ["b", "a"]
        [date_time_groups.Paris]
        time_zone = "Central Europe Standard/Daylight Time"
        date_format = "D/M/Y"
        time_format = "24-hour"
        ntp_servers = ["ntp.paris.example.test"]
        [date_time_groups.Chicago]
        time_zone = "Central Standard/Daylight Time"
        date_format = "M/D/Y"
        time_format = "12-hour"
        ntp_servers = ["ntp1.chicago.example.test", "ntp2.chicago.example.test"]
        [device_pools.Paris]
        cm_group = "A-first"
        date_time_group = "Paris"
        user_locale = "French_France"
        network_locale = "France"
        [device_pools.Chicago]
        cm_group = "B-first"
        date_time_group = "Chicago"
        [devices.SEP0011223344AA]
        model = "Cisco 8851"
        profile = "oauth"
        pool = "Paris"
        [devices.SEP0011223344BB]
        model = "Cisco 8851"
        profile = "oauth"
        pool = "Chicago"
        [devices.SEP0011223344CC]
        model = "Cisco 8851"
        profile = "oauth"
    "#;

    fn render(name: &str) -> String {
        let templates = Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"), None).unwrap();
        let inventory = Inventory::parse(Path::new("inv.toml"), TWO_SITES).unwrap();
        let device = inventory.device(&DeviceName::parse_canonical(name).unwrap()).unwrap();
        templates.render(&inventory, device, &[]).unwrap()
    }

    /// The values of every `<tag>` of `xml`, in order.
    fn values(xml: &str, tag: &str) -> Vec<String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        xml.split(&open).skip(1).map(|rest| rest.split(&close).next().unwrap().to_owned()).collect()
    }

    /// A file whose shape is known skips the whole check only where that is sound: for values in every
    /// kind of place (text, attributes, names, comments, references, CDATA, outside the root, unescaped),
    /// rendered in two orders so that a shape is first proven by one value and then met with another, the
    /// verdict is always the whole check's.
    #[test]
    fn known_shapes_give_the_whole_checks_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            "<r>{{ v }}</r>",
            "<r a=\"{{ v }}\"/>",
            "<r a='{{ v }}'/>",
            "<r{{ v }}/>",
            "<{{ v }}/>",
            "<r><!-- {{ v }} --></r>",
            "<r>&{{ v }};</r>",
            "<r>&amp{{ v }};</r>",
            "<r>&{{ v }}amp;</r>",
            "<r a=\"&{{ v }}amp;\"/>",
            "{{ v }}<r/>",
            "<r/>{{ v }}",
            "<r>]{{ v }}></r>",
            "<r>]]{{ v }}></r>",
            "<r><![CDATA[{{ v }}]]></r>",
            "<r><?pi {{ v }}?></r>",
            "<r>{{ v|safe }}</r>",
            "<r>{% for x in [1, 2] %}<a n=\"{{ x }}\">{{ v }}{{ v }}</a>{% endfor %}</r>",
            "<?xml version=\"1.0\"?>\n<r>\n  <a>{{ v }}</a>\n</r>\n",
        ];
        for (i, case) in cases.iter().enumerate() {
            std::fs::write(dir.path().join(format!("case{i}.xml.j2")), case).unwrap();
        }
        std::fs::write(dir.path().join(BASE_TEMPLATE), "<r/>").unwrap();
        std::fs::write(dir.path().join(DEFAULT_TEMPLATE), "<r/>").unwrap();
        let templates = Templates::load(dir.path(), None).unwrap();
        let values = [
            "", "x", " x", "a b", "-", "--", "]", "]]", ">", "<", "&", "&amp;", "\u{1}", "\u{FFFE}", "é", "a\"b",
            "x=\"1\"", "r", "\t", "1", "?>", "-->", "amp", "#65;&", "#65;",
        ];
        for (i, case) in cases.iter().enumerate() {
            let name = format!("case{i}.xml.j2");
            for pass in 0..2 {
                let ordered: Vec<&str> =
                    if pass == 0 { values.to_vec() } else { values.iter().rev().copied().collect() };
                for v in ordered {
                    let ctx = minijinja::context! { v => v };
                    let plain = templates.env.get_template(&name).unwrap().render(ctx.clone()).unwrap();
                    let want = crate::provision::xml::check_well_formed(&plain).is_ok();
                    let got = templates.render_checked("t", &name, ctx);
                    assert_eq!(got.is_ok(), want, "{case:?} with {v:?}: {plain:?}");
                    if let Ok(doc) = got {
                        assert_eq!(doc, plain);
                    }
                }
            }
        }
    }

    /// The shipped templates' files go through known shapes: after the first file of a shape, the
    /// others are not checked whole.
    #[test]
    fn shipped_templates_render_through_known_shapes() {
        let templates = Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"), None).unwrap();
        let inventory = Inventory::parse(Path::new("inv.toml"), TWO_SITES).unwrap();
        for _ in 0..2 {
            for device in inventory.devices.values() {
                templates.render(&inventory, device, &[]).unwrap();
            }
        }
        let shapes = templates.shapes.len();
        assert!((1..=inventory.devices.len()).contains(&shapes), "{shapes} shapes");
    }

    /// Templates see every `[cluster]` key under `cluster`: the view lists them one by one, so a key added
    /// to `Cluster` must be added to the view too.
    #[test]
    fn the_cluster_view_has_every_key_of_the_cluster() {
        let mut inventory = Inventory::parse(Path::new("inv.toml"), TWO_SITES).unwrap();
        for services in [ServiceUrls::NONE, ServiceUrls { directory: Some("http://d".into()), ..ServiceUrls::NONE }] {
            inventory.cluster.services = services;
            let keys = |v: serde_json::Value| {
                let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                keys.sort();
                keys
            };
            let mut want = keys(serde_json::to_value(&inventory.cluster).unwrap());
            want.push("call_managers".into());
            want.sort();
            assert_eq!(keys(serde_json::to_value(ClusterView::new(&inventory.cluster)).unwrap()), want);
        }
    }

    #[test]
    fn two_devices_in_two_pools_get_their_pools_call_managers_and_time() {
        let paris = render("SEP0011223344AA");
        let chicago = render("SEP0011223344BB");
        assert_eq!(values(&paris, "processNodeName"), ["cucm-a.example.test", "cucm-b.example.test"]);
        assert_eq!(values(&chicago, "processNodeName"), ["cucm-b.example.test", "cucm-a.example.test"]);
        assert_eq!(values(&paris, "sipOAuthPort"), ["5090", "5092"], "each node's own OAuth port, in group order");
        assert_eq!(values(&chicago, "sipOAuthPort"), ["5092", "5090"]);
        assert!(chicago.contains("<member priority=\"0\">\n          <callManager>\n            <ports>"), "{chicago}");

        assert_eq!(values(&paris, "timeZone"), ["Central Europe Standard/Daylight Time"]);
        assert_eq!(values(&chicago, "timeZone"), ["Central Standard/Daylight Time"]);
        assert_eq!(values(&paris, "dateTemplate"), ["D/M/Y"]);
        assert_eq!(values(&chicago, "dateTemplate"), ["M/D/Ya"], "a 12-hour clock is the trailing a");
        assert_eq!(values(&paris, "name").iter().filter(|n| n.starts_with("ntp")).count(), 1);
        assert!(paris.contains("<name>ntp.paris.example.test</name>"), "{paris}");
        assert!(chicago.contains("<name>ntp1.chicago.example.test</name>"), "{chicago}");
        assert!(chicago.contains("<name>ntp2.chicago.example.test</name>"), "{chicago}");
        assert!(!chicago.contains("ntp.example.test"), "the group's NTP servers replace the cluster's");

        assert_eq!(values(&paris, "networkLocale"), ["France"]);
        assert!(paris.contains("<name>French_France</name>"), "{paris}");
        assert_eq!(values(&chicago, "networkLocale"), ["United_States"], "the cluster's when the pool sets none");

        let none = render("SEP0011223344CC");
        assert_eq!(values(&none, "processNodeName"), ["cucm-a.example.test", "cucm-b.example.test"]);
        assert_eq!(values(&none, "timeZone"), ["Greenwich Standard Time"]);
        assert_eq!(values(&none, "dateTemplate"), ["D/M/Y"]);
        assert!(none.contains("<name>ntp.example.test</name>"), "{none}");
    }
}
