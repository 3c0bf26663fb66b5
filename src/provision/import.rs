//! Phones imported from a CUCM Bulk Administration (BAT) phone export: a CSV file with one phone a row.
//!
//! Every row is checked against the inventory in force (name grammar, phone type, profile of that phone type,
//! owner, duplicates) and every problem of every row is reported with its line; nothing is written unless all
//! rows are valid. The devices then go into the inventory file in place (comments and layout kept, the same
//! `[devices.NAME]` tables a person writes), the whole new inventory is checked by [`Inventory::parse`] (so an
//! import is exactly as strict as a hand-written inventory), and the file is replaced atomically. A running
//! server picks the change up by its file watch.
//!
//! The columns (header names are matched without regard to case or repeated spaces; others are ignored, as a
//! BAT export carries many this server has no use for):
//!
//! | column | |
//! |---|---|
//! | `DEVICE NAME` | required: `SEP` + 12 hex digits, or `CSF`/`BOT`/`TCT`/`TAB` + name; any case, stored upper case |
//! | `DEVICE TYPE` | required: a phone type as CUCM spells it, e.g. `Cisco 8851` |
//! | `DEVICE SECURITY PROFILE` | required: a profile of the inventory, of the same phone type |
//! | `DEVICE POOL` | optional: a device pool of the inventory; empty, or CUCM's built-in `Default` when the inventory has no pool of that name, for the cluster's settings |
//! | `DESCRIPTION` | optional |
//! | `OWNER USER ID` | optional: a user of the inventory, or with `create_users` any valid user id (created, named by its id); empty for no owner |
//! | `DIRECTORY NUMBER <n>` | line n's directory number, n = 1, 2, …; lines are numbered without gaps |
//! | `DISPLAY <n>`, `LINE TEXT LABEL <n>` | line n's display name and label (need `DIRECTORY NUMBER <n>`) |
//! | `SPEED DIAL NUMBER <n>`, `SPEED DIAL LABEL <n>` | speed dials, in the order of n (empty ones skipped) |
//! | `BUSY LAMP FIELD DESTINATION <n>`, `BUSY LAMP FIELD LABEL <n>` | BLF speed dials, likewise |
//! | `MODULE <n>` | a key expansion module: the phone type's module, as CUCM names it; the count of non-empty ones |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use crate::provision::filename::{DeviceName, DeviceNameError};
use crate::provision::inventory::{
    BlfSpeedDial, Device, DeviceDoc, Inventory, InventoryError, InventoryErrors, Line, ServiceUrls, SpeedDial, User,
    UserDoc,
};
use crate::provision::model::PhoneType;
use crate::provision::rules::{self, DeviceFields, DeviceProblem, did_you_mean};
use crate::util::fsutil::atomic_write;
use crate::util::progress::Progress;

pub const COL_DEVICE_NAME: &str = "DEVICE NAME";
pub const COL_DEVICE_TYPE: &str = "DEVICE TYPE";
pub const COL_PROFILE: &str = "DEVICE SECURITY PROFILE";
pub const COL_DESCRIPTION: &str = "DESCRIPTION";
pub const COL_POOL: &str = "DEVICE POOL";
/// CUCM's built-in device pool: without a pool of that name in the inventory, the cluster's settings.
pub const DEFAULT_POOL: &str = "Default";
pub const COL_OWNER: &str = "OWNER USER ID";
/// Followed by a space and the line number, e.g. `DIRECTORY NUMBER 1`.
pub const COL_DN: &str = "DIRECTORY NUMBER";
pub const COL_DISPLAY: &str = "DISPLAY";
pub const COL_LABEL: &str = "LINE TEXT LABEL";
/// Followed by a space and the speed dial's number, e.g. `SPEED DIAL NUMBER 1`.
pub const COL_SD_NUMBER: &str = "SPEED DIAL NUMBER";
pub const COL_SD_LABEL: &str = "SPEED DIAL LABEL";
/// Followed by a space and the BLF speed dial's number, e.g. `BUSY LAMP FIELD DESTINATION 1`.
pub const COL_BLF_DESTINATION: &str = "BUSY LAMP FIELD DESTINATION";
pub const COL_BLF_LABEL: &str = "BUSY LAMP FIELD LABEL";
/// Followed by a space and the module's number: the key expansion module's type (CUCM's "Module 1").
pub const COL_MODULE: &str = "MODULE";

/// What an import may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Rows naming a device already in the inventory replace its imported fields; without it they are refused.
    pub update: bool,
    /// Check everything, write nothing.
    pub dry_run: bool,
    /// Owners not in the inventory are created (named by their user id until a user import, the console or
    /// a directory sync gives them a name) instead of refusing their rows.
    pub create_users: bool,
}

/// What an import did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Data rows read (rows whose fields are all empty are skipped and not counted).
    pub rows: usize,
    pub added: Vec<DeviceName>,
    pub updated: Vec<DeviceName>,
    /// Devices already in the inventory exactly as the row describes them (`update` only); left untouched.
    pub unchanged: Vec<DeviceName>,
    /// Columns of the file that an import does not use, as written in the header.
    pub ignored_columns: Vec<String>,
    /// Owners created (`create_users`), sorted.
    pub created_users: Vec<String>,
    /// Whether the inventory file was replaced (false for a dry run or when nothing changed).
    pub written: bool,
}

/// Why a row (or the header, line 1) cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    #[error("the header has no {0:?} column")]
    MissingColumn(&'static str),
    #[error("the header has the column {0:?} twice")]
    DuplicateColumn(String),
    #[error("column {0:?}: line numbers are whole numbers from 1, e.g. \"{COL_DN} 1\"")]
    BadLineNumber(String),
    #[error("column {column:?} needs a \"{COL_DN} {line}\" column")]
    LineColumnWithoutNumber { column: String, line: u32 },
    #[error("not a CSV record: {0}")]
    Csv(String),
    #[error("the row is not valid UTF-8 text")]
    NotUtf8,
    #[error("the row has {found} fields, the header {expected}")]
    FieldCount { found: usize, expected: usize },
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{column} holds a control character")]
    ControlCharacter { column: String },
    #[error("device name {name:?}: {error}")]
    DeviceName { name: String, error: DeviceNameError },
    /// A rule of the inventory ([`rules::check_device`]), in the words of a BAT file.
    #[error("{}", bat_words(.0))]
    Rule(DeviceProblem),
    #[error("{COL_DN} {line} is set but {COL_DN} {missing} is empty: lines are numbered from 1 without gaps")]
    LineGap { line: u32, missing: u32 },
    #[error("{column} is set but {COL_DN} {line} is empty")]
    LineFieldWithoutNumber { column: String, line: u32 },
    #[error("{column} is set but {needs} is empty")]
    LabelWithoutDestination { column: String, needs: String },
    #[error("{column} {value:?}: a {model} takes {}", if expected.is_empty() { "no key expansion module".to_owned() } else { format!("the {expected:?}") })]
    WrongModule { column: String, value: String, model: &'static str, expected: &'static str },
    #[error("the device is also on line {first_line}")]
    DuplicateInFile { name: DeviceName, first_line: u64 },
    #[error("the device is already in the inventory (give --update to replace its imported fields)")]
    Exists(DeviceName),
    #[error("{0}")]
    Inventory(String),
}

/// A broken inventory rule as a BAT file names things: "device type" for the model, "device security
/// profile" for the profile.
fn bat_words(problem: &DeviceProblem) -> String {
    match problem {
        DeviceProblem::UnknownModel { model, suggestion } => format!(
            "unknown device type {model:?}{} (docs/inventory.md lists the phone types)",
            did_you_mean(*suggestion)
        ),
        DeviceProblem::UnknownProfile { profile, suggestion } => {
            format!("unknown device security profile {profile:?}{}", did_you_mean(suggestion.as_deref()))
        }
        DeviceProblem::UnknownOwner { owner, suggestion } => format!(
            "unknown owner user {owner:?}{} (add it first, or import with --create-users)",
            did_you_mean(suggestion.as_deref())
        ),
        DeviceProblem::UnknownPool { pool, suggestion } => format!(
            "unknown device pool {pool:?}{}: add [device_pools.{pool:?}] to the inventory first, or leave {COL_POOL} \
             empty (or {DEFAULT_POOL:?}) for the cluster's settings",
            did_you_mean(suggestion.as_deref())
        ),
        DeviceProblem::MraWithoutOAuth { profile } => format!(
            "device security profile {profile:?} does not enable OAuth, and the device allows activation code via \
             MRA (allow_activation_code_via_mra in the inventory, which --update keeps): choose an OAuth profile, \
             or remove that key from the inventory first"
        ),
        other => other.to_string(),
    }
}

/// One problem of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row's line in the file (1 is the header); a quoted field may span lines, this is where the row starts.
    pub line: u64,
    /// The device the row names, once its name has been read.
    pub device: Option<String>,
    pub problem: RowProblem,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.device {
            Some(d) => write!(f, "line {} ({d}): {}", self.line, self.problem),
            None => write!(f, "line {}: {}", self.line, self.problem),
        }
    }
}

/// Every problem of every row, in line order.
#[derive(Debug, Clone)]
pub struct RowErrors {
    /// Data rows read.
    pub rows: usize,
    /// The problems are the header's: no row was checked.
    pub header: bool,
    pub errors: Vec<RowError>,
}

impl RowErrors {
    /// How many lines (rows, or the header) have at least one problem.
    pub fn invalid_rows(&self) -> usize {
        let mut lines: Vec<u64> = self.errors.iter().map(|e| e.line).collect();
        lines.dedup();
        lines.len()
    }
}

impl fmt::Display for RowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "{e}")?;
        }
        if self.header {
            write!(f, "the header is not usable; nothing written")
        } else {
            write!(f, "{} invalid row(s) of {}; nothing written", self.invalid_rows(), self.rows)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the inventory does not load; fix it first (`sipcfg check` lists every problem):\n{0}")]
    Inventory(InventoryErrors),
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `devices` is not a table of [devices.NAME] tables; the import cannot add to it")]
    Layout { path: PathBuf },
    #[error("{0}")]
    Rows(RowErrors),
    #[error("nothing was written, the inventory would be invalid:\n{0}")]
    Invalid(InventoryErrors),
    #[error("{path} changed while the import was checked; nothing was written, run the import again")]
    Changed { path: PathBuf },
}

/// Imports `csv_path` into the inventory at `inventory_path`.
pub fn import(
    inventory_path: &Path,
    csv_path: &Path,
    options: Options,
    progress: &mut dyn Progress,
) -> Result<ImportReport, ImportError> {
    let csv = std::fs::read(csv_path).map_err(|source| ImportError::Read { path: csv_path.to_owned(), source })?;
    import_bytes(inventory_path, &csv, options, progress)
}

/// Imports the BAT export `csv` (the bytes of the file) into the inventory at `inventory_path`.
pub fn import_bytes(
    inventory_path: &Path,
    csv: &[u8],
    options: Options,
    progress: &mut dyn Progress,
) -> Result<ImportReport, ImportError> {
    let text = std::fs::read_to_string(inventory_path)
        .map_err(|source| ImportError::Read { path: inventory_path.to_owned(), source })?;
    let inventory = Inventory::parse(inventory_path, &text).map_err(ImportError::Inventory)?;
    let plan = plan(&inventory, csv, options, progress)?;
    let new_text = apply(inventory_path, &text, &plan)?;
    let mut report = plan.report;
    if options.dry_run || new_text == text {
        return Ok(report);
    }
    let now = std::fs::read_to_string(inventory_path)
        .map_err(|source| ImportError::Read { path: inventory_path.to_owned(), source })?;
    if now != text {
        return Err(ImportError::Changed { path: inventory_path.to_owned() });
    }
    atomic_write(inventory_path, new_text.as_bytes())
        .map_err(|source| ImportError::Write { path: inventory_path.to_owned(), source })?;
    report.written = true;
    Ok(report)
}

/// The checked rows, ready to be written.
#[derive(Debug)]
pub struct Plan {
    pub report: ImportReport,
    devices: Vec<Row>,
    columns: Presence,
}

impl Plan {
    /// The owners the import creates (`create_users`), as the inventory stores them: named by their id.
    pub fn new_users(&self) -> impl Iterator<Item = (String, UserDoc)> + '_ {
        self.report.created_users.iter().map(|id| (id.clone(), UserDoc::new(id.clone(), "")))
    }
}

/// Which optional columns the file has: on an update, only those replace the device's values.
#[derive(Debug, Clone, Copy)]
struct Presence {
    pool: bool,
    description: bool,
    owner: bool,
    lines: bool,
    speed_dials: bool,
    blf_speed_dials: bool,
    modules: bool,
}

#[derive(Debug)]
struct Row {
    line: u64,
    name: DeviceName,
    phone_type: &'static PhoneType,
    profile: String,
    pool: Option<String>,
    owner: Option<String>,
    description: String,
    lines: Vec<Line>,
    speed_dials: Vec<SpeedDial>,
    blf_speed_dials: Vec<BlfSpeedDial>,
    key_expansion_modules: usize,
    /// Already in the inventory.
    exists: bool,
    /// Already in the inventory exactly as the row describes it: left untouched.
    unchanged: bool,
}

/// The line (from 1) where a record starts, from its byte offset: the csv crate's own line count is off by
/// one per CRLF line end (rust-csv#395: every browser upload) and per blank line. Records come in order, so
/// the count goes on from the last one instead of starting over.
struct LineCounter<'a> {
    text: &'a [u8],
    at: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a [u8]) -> LineCounter<'a> {
        LineCounter { text, at: 0, line: 1 }
    }

    fn line_at(&mut self, offset: u64) -> u64 {
        let mut end = usize::try_from(offset).unwrap_or(usize::MAX).min(self.text.len());
        // A record's position may be the line end before it.
        while end < self.text.len() && matches!(self.text[end], b'\r' | b'\n') {
            end += 1;
        }
        if end < self.at {
            return self.line;
        }
        let mut i = self.at;
        while i < end {
            match self.text[i] {
                b'\n' => self.line += 1,
                b'\r' if self.text.get(i + 1) != Some(&b'\n') => self.line += 1,
                _ => {}
            }
            i += 1;
        }
        self.at = end;
        self.line
    }
}

/// Reads and checks every row of `csv` against `inventory`.
pub fn plan(
    inventory: &Inventory,
    csv: &[u8],
    options: Options,
    progress: &mut dyn Progress,
) -> Result<Plan, ImportError> {
    let update = options.update;
    let csv = csv.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(csv);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(csv);
    let mut records = reader.byte_records();
    let mut lines = LineCounter::new(csv);
    let header_error = |errors| ImportError::Rows(RowErrors { rows: 0, header: true, errors });
    let header_problem = |problem| vec![RowError { line: 1, device: None, problem }];
    let header = match records.next() {
        None => return Err(header_error(header_problem(RowProblem::MissingColumn(COL_DEVICE_NAME)))),
        Some(Err(e)) => return Err(header_error(header_problem(RowProblem::Csv(e.to_string())))),
        Some(Ok(record)) => {
            Header::parse(&record, record.position().map_or(1, |p| lines.line_at(p.byte()))).map_err(header_error)?
        }
    };
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in records {
        match record {
            Ok(r) if r.iter().all(<[u8]>::is_empty) => {}
            Ok(r) => rows.push((r.position().map_or(0, |p| lines.line_at(p.byte())), r)),
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_at(p.byte()));
                errors.push(RowError { line, device: None, problem: RowProblem::Csv(e.to_string()) });
            }
        }
    }

    progress.start(rows.len() as u64);
    let mut seen: HashMap<DeviceName, u64> = HashMap::with_capacity(rows.len());
    let mut devices = Vec::with_capacity(rows.len());
    let mut new_users = BTreeSet::new();
    let mut create = options.create_users.then_some(&mut new_users);
    for (line, record) in &rows {
        match header.row(*line, record, inventory, update, &mut seen, create.as_deref_mut()) {
            Ok(row) => devices.push(row),
            Err(mut e) => errors.append(&mut e),
        }
        progress.step();
    }
    progress.finish();
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(ImportError::Rows(RowErrors { rows: rows.len(), header: false, errors }));
    }

    let columns = Presence {
        pool: header.pool.is_some(),
        description: header.description.is_some(),
        owner: header.owner.is_some(),
        lines: !header.lines.is_empty(),
        speed_dials: !header.speed_dials.is_empty(),
        blf_speed_dials: !header.blf_speed_dials.is_empty(),
        modules: !header.modules.is_empty(),
    };
    let mut report = ImportReport {
        rows: rows.len(),
        ignored_columns: header.ignored,
        created_users: new_users.into_iter().collect(),
        ..ImportReport::default()
    };
    for row in &mut devices {
        match inventory.device(&row.name) {
            None => report.added.push(row.name.clone()),
            Some(existing) if row.same_as(existing, columns) => {
                row.unchanged = true;
                report.unchanged.push(row.name.clone());
            }
            Some(_) => report.updated.push(row.name.clone()),
        }
    }
    Ok(Plan { report, devices, columns })
}

/// The inventory `text` with the planned devices in it, checked as a whole inventory.
pub fn apply(path: &Path, text: &str, plan: &Plan) -> Result<String, ImportError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ImportError::Syntax { path: path.to_owned(), message: e.to_string() })?;
    if doc.get("devices").is_none() {
        let mut devices = Table::new();
        devices.set_implicit(true);
        doc.insert("devices", Item::Table(devices));
    }
    let devices = doc
        .get_mut("devices")
        .and_then(Item::as_table_mut)
        .ok_or_else(|| ImportError::Layout { path: path.to_owned() })?;
    let rows = plan.devices.iter().filter(|r| !r.unchanged);
    for row in rows {
        match devices.get_mut(row.name.as_str()).and_then(Item::as_table_like_mut) {
            Some(existing) if row.exists => row.update(existing, plan.columns),
            Some(_) => return Err(ImportError::Layout { path: path.to_owned() }),
            None => {
                devices.insert(row.name.as_str(), Item::Table(row.table()));
            }
        }
    }
    if !plan.report.created_users.is_empty() {
        if doc.get("users").is_none() {
            let mut users = Table::new();
            users.set_implicit(true);
            doc.insert("users", Item::Table(users));
        }
        let users = doc
            .get_mut("users")
            .and_then(Item::as_table_mut)
            .ok_or_else(|| ImportError::Layout { path: path.to_owned() })?;
        for (id, user) in plan.new_users() {
            let mut t = Table::new();
            t.insert("name", toml_edit::value(user.name));
            users.insert(&id, Item::Table(t));
        }
    }
    let new_text = doc.to_string();
    if let Err(errors) = Inventory::parse(path, &new_text) {
        return Err(map_to_rows(errors, &plan.devices, plan.report.rows));
    }
    Ok(new_text)
}

/// The planned devices as documents, for a store that holds documents rather than a TOML file (the shared
/// store): each changed row's device, with the fields of an existing device that the file has no column for
/// kept, each checked as a load checks it (its problems become the row's errors).
pub fn apply_docs(inventory: &Inventory, plan: &Plan) -> Result<Vec<(DeviceName, DeviceDoc)>, ImportError> {
    let mut changed = Vec::new();
    // A device's rules depend on the profiles, pools and users; an import changes only the users, by adding
    // the owners it creates.
    let mut users = inventory.users.clone();
    for (id, doc) in plan.new_users() {
        users.insert(id.clone(), User { id, doc });
    }
    for row in plan.devices.iter().filter(|r| !r.unchanged) {
        let doc = row.doc(inventory.device(&row.name), plan.columns);
        let pools = &inventory.pools.device_pools;
        match Device::from_doc(row.name.clone(), doc.clone(), &inventory.profiles, &users, pools) {
            Ok(_) => {}
            Err(problems) => {
                let errors = problems
                    .into_iter()
                    .map(|message| InventoryError {
                        file: inventory.file.clone(),
                        entry: format!("device {:?}", row.name.as_str()),
                        message,
                    })
                    .collect();
                return Err(map_to_rows(InventoryErrors(errors), &plan.devices, plan.report.rows));
            }
        }
        changed.push((row.name.clone(), doc));
    }
    Ok(changed)
}

/// Errors of the whole new inventory that concern an imported device become that row's errors.
fn map_to_rows(errors: InventoryErrors, rows: &[Row], count: usize) -> ImportError {
    let lines: HashMap<String, &Row> = rows.iter().map(|r| (format!("device {:?}", r.name.as_str()), r)).collect();
    let mut mapped = Vec::new();
    for e in &errors.0 {
        match lines.get(&e.entry) {
            Some(row) => mapped.push(RowError {
                line: row.line,
                device: Some(row.name.to_string()),
                problem: RowProblem::Inventory(e.message.clone()),
            }),
            None => return ImportError::Invalid(errors),
        }
    }
    mapped.sort_by_key(|e| e.line);
    ImportError::Rows(RowErrors { rows: count, header: false, errors: mapped })
}

/// Where each used column is.
#[derive(Debug)]
struct Header {
    width: usize,
    device_name: usize,
    device_type: usize,
    profile: usize,
    pool: Option<usize>,
    description: Option<usize>,
    owner: Option<usize>,
    /// In line order.
    lines: Vec<LineColumns>,
    /// In the order of their numbers.
    speed_dials: Vec<ButtonColumns>,
    blf_speed_dials: Vec<ButtonColumns>,
    modules: Vec<(u32, usize)>,
    /// Every used column's index and name, for messages.
    used: Vec<(usize, String)>,
    ignored: Vec<String>,
}

#[derive(Debug, Default)]
struct LineColumns {
    line: u32,
    dn: Option<usize>,
    display: Option<usize>,
    label: Option<usize>,
}

/// A speed dial's (or BLF speed dial's) columns: its destination and its label.
#[derive(Debug, Default)]
struct ButtonColumns {
    n: u32,
    destination: Option<usize>,
    label: Option<usize>,
}

/// A header name as matched: upper case, single spaces, no surrounding space.
fn normalise(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_uppercase()
}

/// `DIRECTORY NUMBER 2` → (`DIRECTORY NUMBER`, Ok(2)); a bare `DIRECTORY NUMBER` or `… 0` → Err. A name that
/// only starts with one of them (`DISPLAY (CALLER ID) 1`) is another column.
fn line_column(name: &str) -> Option<(&'static str, Result<u32, ()>)> {
    [COL_DN, COL_LABEL, COL_DISPLAY, COL_SD_NUMBER, COL_SD_LABEL, COL_BLF_DESTINATION, COL_BLF_LABEL, COL_MODULE]
        .into_iter()
        .find_map(|base| {
            let rest = name.strip_prefix(base)?;
            if rest.is_empty() {
                return Some((base, Err(())));
            }
            let number = rest.strip_prefix(' ').filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?;
            let parsed = number.parse::<u32>().ok().filter(|n| *n >= 1 && !number.starts_with('0'));
            Some((base, parsed.ok_or(())))
        })
}

impl Header {
    /// The header row, at `line` (1 unless blank lines come first).
    fn parse(record: &csv::ByteRecord, line: u64) -> Result<Header, Vec<RowError>> {
        let mut errors = Vec::new();
        let mut problem = |problem| errors.push(RowError { line, device: None, problem });
        let mut fixed: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut lines: BTreeMap<u32, LineColumns> = BTreeMap::new();
        let mut speed_dials: BTreeMap<u32, ButtonColumns> = BTreeMap::new();
        let mut blf_speed_dials: BTreeMap<u32, ButtonColumns> = BTreeMap::new();
        let mut modules: BTreeMap<u32, usize> = BTreeMap::new();
        let mut ignored = Vec::new();
        let mut used = Vec::new();
        for (i, raw) in record.iter().enumerate() {
            let Ok(raw) = std::str::from_utf8(raw) else {
                problem(RowProblem::NotUtf8);
                continue;
            };
            let name = normalise(raw);
            let known = [COL_DEVICE_NAME, COL_DEVICE_TYPE, COL_PROFILE, COL_POOL, COL_DESCRIPTION, COL_OWNER];
            if let Some(col) = known.into_iter().find(|c| *c == name) {
                if fixed.insert(col, i).is_some() {
                    problem(RowProblem::DuplicateColumn(raw.to_owned()));
                }
                used.push((i, col.to_owned()));
                continue;
            }
            match line_column(&name) {
                None => ignored.push(raw.to_owned()),
                Some((_, Err(()))) => problem(RowProblem::BadLineNumber(raw.to_owned())),
                Some((base, Ok(n))) => {
                    let slot = match base {
                        COL_SD_NUMBER | COL_SD_LABEL => {
                            let e =
                                speed_dials.entry(n).or_insert_with(|| ButtonColumns { n, ..ButtonColumns::default() });
                            if base == COL_SD_NUMBER { &mut e.destination } else { &mut e.label }
                        }
                        COL_BLF_DESTINATION | COL_BLF_LABEL => {
                            let e = blf_speed_dials
                                .entry(n)
                                .or_insert_with(|| ButtonColumns { n, ..ButtonColumns::default() });
                            if base == COL_BLF_DESTINATION { &mut e.destination } else { &mut e.label }
                        }
                        COL_MODULE => {
                            if modules.insert(n, i).is_some() {
                                problem(RowProblem::DuplicateColumn(raw.to_owned()));
                            }
                            used.push((i, format!("{base} {n}")));
                            continue;
                        }
                        _ => {
                            let entry =
                                lines.entry(n).or_insert_with(|| LineColumns { line: n, ..LineColumns::default() });
                            match base {
                                COL_DN => &mut entry.dn,
                                COL_DISPLAY => &mut entry.display,
                                _ => &mut entry.label,
                            }
                        }
                    };
                    if slot.replace(i).is_some() {
                        problem(RowProblem::DuplicateColumn(raw.to_owned()));
                    }
                    used.push((i, format!("{base} {n}")));
                }
            }
        }
        for required in [COL_DEVICE_NAME, COL_DEVICE_TYPE, COL_PROFILE] {
            if !fixed.contains_key(required) {
                problem(RowProblem::MissingColumn(required));
            }
        }
        for l in lines.values().filter(|l| l.dn.is_none()) {
            let column = if l.display.is_some() { COL_DISPLAY } else { COL_LABEL };
            problem(RowProblem::LineColumnWithoutNumber { column: format!("{column} {}", l.line), line: l.line });
        }
        match (fixed.get(COL_DEVICE_NAME), fixed.get(COL_DEVICE_TYPE), fixed.get(COL_PROFILE)) {
            (Some(&device_name), Some(&device_type), Some(&profile)) if errors.is_empty() => Ok(Header {
                width: record.len(),
                device_name,
                device_type,
                profile,
                pool: fixed.get(COL_POOL).copied(),
                description: fixed.get(COL_DESCRIPTION).copied(),
                owner: fixed.get(COL_OWNER).copied(),
                lines: lines.into_values().collect(),
                speed_dials: speed_dials.into_values().collect(),
                blf_speed_dials: blf_speed_dials.into_values().collect(),
                modules: modules.into_iter().collect(),
                used,
                ignored,
            }),
            _ => Err(errors),
        }
    }

    /// Checks one data row; every problem it has.
    fn row(
        &self,
        line: u64,
        record: &csv::ByteRecord,
        inventory: &Inventory,
        update: bool,
        seen: &mut HashMap<DeviceName, u64>,
        mut create_users: Option<&mut BTreeSet<String>>,
    ) -> Result<Row, Vec<RowError>> {
        let fail = |device: Option<String>, problems: Vec<RowProblem>| {
            problems.into_iter().map(|problem| RowError { line, device: device.clone(), problem }).collect::<Vec<_>>()
        };
        if record.len() != self.width {
            return Err(fail(None, vec![RowProblem::FieldCount { found: record.len(), expected: self.width }]));
        }
        let mut fields = Vec::with_capacity(record.len());
        for raw in record {
            match std::str::from_utf8(raw) {
                Ok(s) => fields.push(s),
                Err(_) => return Err(fail(None, vec![RowProblem::NotUtf8])),
            }
        }
        let mut problems = Vec::new();
        for (i, column) in &self.used {
            if fields.get(*i).is_some_and(|v| v.chars().any(char::is_control)) {
                problems.push(RowProblem::ControlCharacter { column: column.clone() });
            }
        }
        let at = |i: usize| fields.get(i).copied().unwrap_or("");
        let raw_name = at(self.device_name);
        let model = at(self.device_type);
        let profile = at(self.profile);
        let description = self.description.map_or("", at);
        // CUCM's built-in pool is the cluster's settings, unless the inventory has a pool of that name.
        let pool = self
            .pool
            .map(at)
            .filter(|p| !p.is_empty())
            .filter(|p| *p != DEFAULT_POOL || inventory.pools.device_pools.contains_key(*p));
        let owner = self.owner.map_or("", at);
        let line_values: Vec<_> = self
            .lines
            .iter()
            .map(|l| (l.line, l.dn.map_or("", at), l.display.map_or("", at), l.label.map_or("", at)))
            .collect();

        let name = if raw_name.is_empty() {
            problems.push(RowProblem::Empty(COL_DEVICE_NAME));
            None
        } else {
            match DeviceName::parse_loose(raw_name) {
                Ok(n) => Some(n),
                Err(error) => {
                    problems.push(RowProblem::DeviceName { name: raw_name.to_owned(), error });
                    None
                }
            }
        };
        let device =
            Some(name.as_ref().map_or_else(|| raw_name.to_owned(), ToString::to_string)).filter(|d| !d.is_empty());

        if model.is_empty() {
            problems.push(RowProblem::Empty(COL_DEVICE_TYPE));
        }
        if profile.is_empty() {
            problems.push(RowProblem::Empty(COL_PROFILE));
        }

        let mut lines = Vec::new();
        let mut expected = 1;
        for &(n, dn, display, label) in &line_values {
            if dn.is_empty() {
                for (column, value) in [(COL_DISPLAY, display), (COL_LABEL, label)] {
                    if !value.is_empty() {
                        problems.push(RowProblem::LineFieldWithoutNumber { column: format!("{column} {n}"), line: n });
                    }
                }
                continue;
            }
            if n != expected {
                problems.push(RowProblem::LineGap { line: n, missing: expected });
            }
            expected = n.saturating_add(1);
            lines.push(Line { dn: dn.to_owned(), display_name: display.to_owned(), label: label.to_owned() });
        }

        let mut buttons = |columns: &[ButtonColumns], (dest_col, label_col): (&str, &str)| {
            let mut out = Vec::new();
            for b in columns {
                let destination = b.destination.map_or("", at);
                let label = b.label.map_or("", at);
                if destination.is_empty() {
                    if !label.is_empty() {
                        problems.push(RowProblem::LabelWithoutDestination {
                            column: format!("{label_col} {}", b.n),
                            needs: format!("{dest_col} {}", b.n),
                        });
                    }
                    continue;
                }
                out.push((destination.to_owned(), label.to_owned()));
            }
            out
        };
        let speed_dials: Vec<SpeedDial> = buttons(&self.speed_dials, (COL_SD_NUMBER, COL_SD_LABEL))
            .into_iter()
            .map(|(number, label)| SpeedDial { number, label })
            .collect();
        let blf_speed_dials: Vec<BlfSpeedDial> = buttons(&self.blf_speed_dials, (COL_BLF_DESTINATION, COL_BLF_LABEL))
            .into_iter()
            .map(|(destination, label)| BlfSpeedDial { destination, label })
            .collect();
        let mut key_expansion_modules = 0;
        for &(n, i) in &self.modules {
            let value = at(i);
            if value.is_empty() {
                continue;
            }
            key_expansion_modules += 1;
            // The module must be the phone type's; an unknown type is reported as such below.
            if let Some(t) = crate::provision::model::phone_type(model)
                && !value.eq_ignore_ascii_case(t.features.kem_model)
                && !t.features.kem_model.is_empty()
            {
                problems.push(RowProblem::WrongModule {
                    column: format!("{COL_MODULE} {n}"),
                    value: value.to_owned(),
                    model: t.name,
                    expected: t.features.kem_model,
                });
            }
        }

        // An update keeps the device's MRA keys (a BAT file has no columns for them): the row is checked with them.
        let kept = name.as_ref().and_then(|n| inventory.device(n)).filter(|_| update);
        let fields = DeviceFields {
            name: name.as_ref(),
            model,
            profile,
            // Without the column, an update keeps the device's pool.
            pool: if self.pool.is_some() { pool } else { kept.and_then(|d| d.pool.as_deref()) },
            owner: Some(owner).filter(|o| !o.is_empty()),
            lines: &lines,
            allow_activation_code_via_mra: kept.is_some_and(|d| d.allow_activation_code_via_mra),
            mra_service_domain: kept.map_or("", |d| d.mra_service_domain.as_str()),
            // Buttons and service URLs have no columns here either: an update keeps them, and they must
            // still fit beside the row's lines.
            speed_dials: if self.speed_dials.is_empty() {
                kept.map_or(&[], |d| d.speed_dials.as_slice())
            } else {
                &speed_dials
            },
            blf_speed_dials: if self.blf_speed_dials.is_empty() {
                kept.map_or(&[], |d| d.blf_speed_dials.as_slice())
            } else {
                &blf_speed_dials
            },
            key_expansion_modules: if self.modules.is_empty() {
                kept.map_or(0, |d| d.key_expansion_modules)
            } else {
                key_expansion_modules
            },
            services: kept.and_then(|d| d.services.as_deref()).unwrap_or(&ServiceUrls::NONE),
        };
        let (phone_type, broken) =
            rules::check_device(fields, &inventory.profiles, &inventory.users, &inventory.pools.device_pools);
        for problem in broken {
            // An empty column was reported as such above.
            let empty = match &problem {
                DeviceProblem::UnknownModel { .. } => model.is_empty(),
                DeviceProblem::UnknownProfile { .. } => profile.is_empty(),
                DeviceProblem::UnknownOwner { owner, .. } if create_users.is_some() => {
                    if rules::valid_user_id(owner) {
                        if let Some(created) = create_users.as_deref_mut() {
                            created.insert(owner.clone());
                        }
                    } else {
                        problems.push(RowProblem::Inventory(format!(
                            "owner user id {owner:?} cannot be created: {}",
                            rules::USER_ID_RULE
                        )));
                    }
                    true
                }
                _ => false,
            };
            if !empty {
                problems.push(RowProblem::Rule(problem));
            }
        }

        let exists = name.as_ref().is_some_and(|n| inventory.device(n).is_some());
        if let Some(n) = &name {
            match seen.get(n) {
                Some(&first_line) => problems.push(RowProblem::DuplicateInFile { name: n.clone(), first_line }),
                None => {
                    seen.insert(n.clone(), line);
                }
            }
            if exists && !update {
                problems.push(RowProblem::Exists(n.clone()));
            }
        }

        match (name, phone_type) {
            (Some(name), Some(phone_type)) if problems.is_empty() => Ok(Row {
                line,
                name,
                phone_type,
                profile: profile.to_owned(),
                pool: pool.map(str::to_owned),
                owner: Some(owner.to_owned()).filter(|o| !o.is_empty()),
                description: description.to_owned(),
                lines,
                speed_dials,
                blf_speed_dials,
                key_expansion_modules,
                exists,
                unchanged: false,
            }),
            _ => Err(fail(device, problems)),
        }
    }
}

impl Row {
    /// Whether the device already is as the row describes it (only the file's columns count).
    fn same_as(&self, d: &Device, columns: Presence) -> bool {
        let line = |l: &Line| (l.dn.clone(), l.display_name.clone(), l.label.clone());
        d.phone_type.name == self.phone_type.name
            && d.profile == self.profile
            && (!columns.pool || d.pool == self.pool)
            && (!columns.owner || d.owner == self.owner)
            && (!columns.description || d.description == self.description)
            && (!columns.lines || d.lines.iter().map(line).eq(self.lines.iter().map(line)))
            && (!columns.speed_dials || d.speed_dials == self.speed_dials)
            && (!columns.blf_speed_dials || d.blf_speed_dials == self.blf_speed_dials)
            && (!columns.modules || d.key_expansion_modules == self.key_expansion_modules)
    }

    /// The device as a document: a new one, or `existing` with the columns of the file replaced (its other
    /// fields, such as enabled and MRA, stay).
    fn doc(&self, existing: Option<&Device>, columns: Presence) -> DeviceDoc {
        let mut doc = existing.map_or_else(
            || DeviceDoc {
                model: String::new(),
                profile: String::new(),
                pool: self.pool.clone(),
                owner: self.owner.clone(),
                description: self.description.clone(),
                lines: self.lines.clone(),
                enabled: true,
                allow_activation_code_via_mra: false,
                mra_service_domain: String::new(),
                speed_dials: self.speed_dials.clone(),
                blf_speed_dials: self.blf_speed_dials.clone(),
                key_expansion_modules: self.key_expansion_modules,
                services: None,
            },
            Device::to_doc,
        );
        doc.model = self.phone_type.name.to_owned();
        doc.profile = self.profile.clone();
        if existing.is_some() {
            if columns.pool {
                doc.pool = self.pool.clone();
            }
            if columns.owner {
                doc.owner = self.owner.clone();
            }
            if columns.description {
                doc.description = self.description.clone();
            }
            if columns.lines {
                doc.lines = self.lines.clone();
            }
            if columns.speed_dials {
                doc.speed_dials = self.speed_dials.clone();
            }
            if columns.blf_speed_dials {
                doc.blf_speed_dials = self.blf_speed_dials.clone();
            }
            if columns.modules {
                doc.key_expansion_modules = self.key_expansion_modules;
            }
        }
        doc
    }

    /// A new `[devices.NAME]` table, keys in the order the example inventory uses.
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.insert("model", toml_edit::value(self.phone_type.name));
        t.insert("profile", toml_edit::value(&self.profile));
        if let Some(pool) = &self.pool {
            t.insert("pool", toml_edit::value(pool));
        }
        if let Some(owner) = &self.owner {
            t.insert("owner", toml_edit::value(owner));
        }
        if !self.description.is_empty() {
            t.insert("description", toml_edit::value(&self.description));
        }
        if !self.lines.is_empty() {
            t.insert("lines", toml_edit::value(lines_array(&self.lines)));
        }
        if !self.speed_dials.is_empty() {
            t.insert("speed_dials", toml_edit::value(speed_dials_array(&self.speed_dials)));
        }
        if !self.blf_speed_dials.is_empty() {
            t.insert("blf_speed_dials", toml_edit::value(blf_array(&self.blf_speed_dials)));
        }
        if self.key_expansion_modules > 0 {
            t.insert("key_expansion_modules", toml_edit::value(self.key_expansion_modules as i64));
        }
        t
    }

    /// Replaces the imported fields of an existing device; its other keys (enabled, MRA) and comments stay.
    fn update(&self, t: &mut dyn TableLike, columns: Presence) {
        set(t, "model", Some(self.phone_type.name.into()));
        set(t, "profile", Some(self.profile.as_str().into()));
        if columns.pool {
            set(t, "pool", self.pool.as_deref().map(Value::from));
        }
        if columns.owner {
            set(t, "owner", self.owner.as_deref().map(Value::from));
        }
        if columns.description {
            set(t, "description", Some(self.description.as_str()).filter(|d| !d.is_empty()).map(Value::from));
        }
        if columns.lines {
            set(t, "lines", Some(Value::Array(lines_array(&self.lines))).filter(|_| !self.lines.is_empty()));
        }
        if columns.speed_dials {
            let array = Some(Value::Array(speed_dials_array(&self.speed_dials)));
            set(t, "speed_dials", array.filter(|_| !self.speed_dials.is_empty()));
        }
        if columns.blf_speed_dials {
            let array = Some(Value::Array(blf_array(&self.blf_speed_dials)));
            set(t, "blf_speed_dials", array.filter(|_| !self.blf_speed_dials.is_empty()));
        }
        if columns.modules {
            let modules = Some(Value::from(self.key_expansion_modules as i64));
            set(t, "key_expansion_modules", modules.filter(|_| self.key_expansion_modules > 0));
        }
    }
}

/// Sets (or with `None` removes) a key, keeping the old value's comments and spacing.
fn set(t: &mut dyn TableLike, key: &str, new: Option<Value>) {
    let Some(mut new) = new else {
        t.remove(key);
        return;
    };
    match t.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            let decor = old.decor().clone();
            *new.decor_mut() = decor;
            *old = new;
        }
        None => {
            t.insert(key, Item::Value(new));
        }
    }
}

/// `[{ dn = "1001" }]`, or one line a row when there are several, as the example inventory writes them.
fn lines_array(lines: &[Line]) -> Array {
    inline_array(
        lines
            .iter()
            .map(|l| [("dn", l.dn.as_str()), ("display_name", l.display_name.as_str()), ("label", l.label.as_str())]),
    )
}

fn speed_dials_array(speed_dials: &[SpeedDial]) -> Array {
    inline_array(speed_dials.iter().map(|sd| [("number", sd.number.as_str()), ("label", sd.label.as_str())]))
}

fn blf_array(blf: &[BlfSpeedDial]) -> Array {
    inline_array(blf.iter().map(|b| [("destination", b.destination.as_str()), ("label", b.label.as_str())]))
}

/// Inline tables of the non-empty values (the first key always), one a row when there are several.
fn inline_array<'a, const N: usize>(items: impl Iterator<Item = [(&'a str, &'a str); N]>) -> Array {
    let mut array = Array::new();
    for item in items {
        let mut t = InlineTable::new();
        for (i, (key, value)) in item.into_iter().enumerate() {
            if i == 0 || !value.is_empty() {
                t.insert(key, value.into());
            }
        }
        array.push(t);
    }
    if array.len() > 1 {
        for v in array.iter_mut() {
            v.decor_mut().set_prefix("\n  ");
        }
        array.set_trailing_comma(true);
        array.set_trailing("\n");
    }
    array
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_count_crlf_cr_and_blank_lines() {
        for (text, expect) in [
            (&b"h\na\nb\n"[..], vec![2, 3]),
            (b"h\r\na\r\nb\r\n", vec![2, 3]),
            (b"h\ra\rb\r", vec![2, 3]),
            (b"h\n\na\n\n\nb\n", vec![3, 6]),
            (b"h\r\n\"x\r\ny\",1\r\nb\r\n", vec![2, 4]),
        ] {
            let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text);
            let mut counter = LineCounter::new(text);
            let got: Vec<u64> =
                reader.byte_records().map(|r| counter.line_at(r.unwrap().position().unwrap().byte())).collect();
            assert_eq!(got, expect, "{:?}", String::from_utf8_lossy(text));
        }
    }
    use crate::util::progress::Silent;

    const INVENTORY: &str = r#"# The inventory.
[cluster]
name = "c"
call_managers = [{ address = "cucm.example.com" }]

[profiles."8851 OAuth"]
phone_type = "Cisco 8851"
security_mode = "encrypted"
transport = "tls"
oauth = true

[profiles."CSF OAuth"]
phone_type = "Cisco Unified Client Services Framework"
security_mode = "encrypted"
transport = "tls"
oauth = true

[users.jsmith]
name = "John Smith"

[devices.SEP001122334455]
model = "Cisco 8851"
profile = "8851 OAuth"   # keep me
owner = "jsmith"
enabled = false
lines = [{ dn = "1001" }]
"#;

    fn inventory() -> Inventory {
        Inventory::parse(Path::new("inv.toml"), INVENTORY).unwrap()
    }

    fn run(csv: &str, update: bool) -> Result<String, ImportError> {
        let plan = plan(&inventory(), csv.as_bytes(), Options { update, ..Options::default() }, &mut Silent)?;
        apply(Path::new("inv.toml"), INVENTORY, &plan)
    }

    fn row_errors(csv: &str, update: bool) -> Vec<String> {
        match run(csv, update) {
            Err(ImportError::Rows(e)) => e.errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected row errors, got {other:?}"),
        }
    }

    #[test]
    fn adds_devices_in_the_inventory_layout() {
        let csv = "\u{feff}Device Name,description,DEVICE  TYPE,Device Security Profile,Owner User ID,Device Pool,\
                   Directory Number 1,Display 1,Line Text Label 1,Directory Number 2\n\
                   sep00112233aabb,Desk,Cisco 8851,8851 OAuth,jsmith,Default,1002,John,1002 John,1901\n\
                   ,,,,,,,,,\n\
                   CSFJDOE,,Cisco Unified Client Services Framework,CSF OAuth,,Default,1003,,,\n";
        let text = run(csv, false).unwrap();
        assert!(text.starts_with("# The inventory.\n"), "{text}");
        assert!(text.contains("profile = \"8851 OAuth\"   # keep me"));
        let expected = "\n[devices.SEP00112233AABB]\nmodel = \"Cisco 8851\"\nprofile = \"8851 OAuth\"\nowner = \"jsmith\"\n\
                        description = \"Desk\"\nlines = [\n  { dn = \"1002\", display_name = \"John\", label = \"1002 John\" },\n  \
                        { dn = \"1901\" },\n]\n";
        assert!(text.contains(expected), "{text}");
        assert!(
            text.ends_with(
                "\n[devices.CSFJDOE]\nmodel = \"Cisco Unified Client Services Framework\"\nprofile = \"CSF OAuth\"\n\
                 lines = [{ dn = \"1003\" }]\n"
            ),
            "{text}"
        );
        let inv = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
        assert_eq!(inv.devices.len(), 3);
    }

    #[test]
    fn reports_every_problem_of_every_row_with_its_line() {
        let csv = "DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE,OWNER USER ID,DIRECTORY NUMBER 1,DIRECTORY NUMBER 2,DISPLAY 2\n\
                   SEP0011223344ZZ,Cisco 8851,8851 OAuth,,1,,\n\
                   SEPAABBCCDDEEFF,cisco 8851,nope,who,1,,\n\
                   SEP001122334455,Cisco 8851,CSF OAuth,JSMITH,,2,x\n\
                   CSFX,Cisco 8851,8851 OAuth,,1,,\n\
                   CSFY,Cisco 8851\n\
                   CSFZ,Cisco Unified Client Services Framework,CSF OAuth,,1,,\n\
                   csfz,Cisco Unified Client Services Framework,CSF OAuth,,1,,x\n";
        let errs = row_errors(csv, false);
        for needle in [
            "line 2 (SEP0011223344ZZ): device name \"SEP0011223344ZZ\": a SEP device name is SEP followed by the MAC",
            "line 3 (SEPAABBCCDDEEFF): unknown device type \"cisco 8851\" (did you mean \"Cisco 8851\"?)",
            "line 3 (SEPAABBCCDDEEFF): unknown device security profile \"nope\"",
            "line 3 (SEPAABBCCDDEEFF): unknown owner user \"who\"",
            "line 4 (SEP001122334455): profile \"CSF OAuth\" belongs to phone type \"Cisco Unified Client Services Framework\", not to \"Cisco 8851\"",
            "line 4 (SEP001122334455): unknown owner user \"JSMITH\" (did you mean \"jsmith\"?)",
            "line 4 (SEP001122334455): DIRECTORY NUMBER 2 is set but DIRECTORY NUMBER 1 is empty",
            "line 4 (SEP001122334455): the device is already in the inventory (give --update",
            "line 5 (CSFX): a Cisco 8851 is named SEP<…>, not CSF<…>",
            "line 6: the row has 2 fields, the header 7",
            "line 8 (CSFZ): the device is also on line 7",
        ] {
            assert!(errs.iter().any(|e| e.starts_with(needle)), "missing {needle:?} in:\n{}", errs.join("\n"));
        }
        assert!(!errs.iter().any(|e| e.starts_with("line 7")), "{errs:?}");
    }

    #[test]
    fn header_problems_are_line_one() {
        let errs = row_errors(
            "Device Name,Description,DESCRIPTION,Display 1,Display (Caller ID) 2,Directory Number 0\n",
            false,
        );
        assert_eq!(
            errs,
            [
                "line 1: the header has the column \"DESCRIPTION\" twice",
                "line 1: column \"Directory Number 0\": line numbers are whole numbers from 1, e.g. \"DIRECTORY NUMBER 1\"",
                "line 1: the header has no \"DEVICE TYPE\" column",
                "line 1: the header has no \"DEVICE SECURITY PROFILE\" column",
                "line 1: column \"DISPLAY 1\" needs a \"DIRECTORY NUMBER 1\" column",
            ]
        );
        assert_eq!(row_errors("", false), ["line 1: the header has no \"DEVICE NAME\" column"]);
    }

    #[test]
    fn update_replaces_only_the_columns_of_the_file_and_keeps_the_rest() {
        let csv = "DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE,DIRECTORY NUMBER 1\n\
                   SEP001122334455,Cisco 8851,8851 OAuth,2001\n";
        let text = run(csv, true).unwrap();
        assert!(
            text.ends_with(
                "[devices.SEP001122334455]\nmodel = \"Cisco 8851\"\nprofile = \"8851 OAuth\"   # keep me\n\
                 owner = \"jsmith\"\nenabled = false\nlines = [{ dn = \"2001\" }]\n"
            ),
            "{text}"
        );
        let same = "DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE,DIRECTORY NUMBER 1\n\
                    SEP001122334455,Cisco 8851,8851 OAuth,1001\n";
        let plan =
            plan(&inventory(), same.as_bytes(), Options { update: true, ..Options::default() }, &mut Silent).unwrap();
        assert_eq!(plan.report.unchanged.len(), 1);
        assert_eq!(apply(Path::new("inv.toml"), INVENTORY, &plan).unwrap(), INVENTORY);
    }

    #[test]
    fn an_update_checks_the_kept_mra_keys_against_the_new_profile() {
        let text = format!(
            "{INVENTORY}\n[profiles.\"8851 TLS\"]\nphone_type = \"Cisco 8851\"\nsecurity_mode = \"encrypted\"\n\
             transport = \"tls\"\n\n[devices.SEP0011223344AA]\nmodel = \"Cisco 8851\"\nprofile = \"8851 OAuth\"\n\
             allow_activation_code_via_mra = true\nmra_service_domain = \"mra.example.test\"\n"
        );
        let inventory = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
        let csv = "DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE\n\
                   SEP0011223344AA,Cisco 8851,8851 TLS\n\
                   SEP001122334455,Cisco 8851,8851 TLS\n";
        let errs = match plan(&inventory, csv.as_bytes(), Options { update: true, ..Options::default() }, &mut Silent) {
            Err(ImportError::Rows(e)) => e.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            other => panic!("expected row errors, got {other:?}"),
        };
        assert_eq!(
            errs,
            ["line 2 (SEP0011223344AA): device security profile \"8851 TLS\" does not enable OAuth, and the device \
              allows activation code via MRA (allow_activation_code_via_mra in the inventory, which --update keeps): \
              choose an OAuth profile, or remove that key from the inventory first"],
            "the device without MRA may take the profile"
        );
    }

    #[test]
    fn the_device_pool_column_names_a_pool_of_the_inventory_and_default_is_the_clusters() {
        let text = format!(
            "{INVENTORY}\n[cm_groups.HQ]\ncall_managers = [\"cucm.example.com\"]\n\n[device_pools.HQ]\n\
             cm_group = \"HQ\"\n\n[device_pools.Branch]\n"
        );
        let inventory = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
        let csv = "DEVICE NAME,DEVICE TYPE,DEVICE POOL,DEVICE SECURITY PROFILE\n\
                   SEP0011223344AA,Cisco 8851,HQ,8851 OAuth\n\
                   SEP0011223344BB,Cisco 8851,Default,8851 OAuth\n\
                   SEP0011223344CC,Cisco 8851,,8851 OAuth\n\
                   SEP0011223344DD,Cisco 8851,hq,8851 OAuth\n\
                   SEP0011223344EE,Cisco 8851,Lab,8851 OAuth\n";
        let errs = match plan(&inventory, csv.as_bytes(), Options { update: false, ..Options::default() }, &mut Silent)
        {
            Err(ImportError::Rows(e)) => e.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            other => panic!("expected row errors, got {other:?}"),
        };
        assert_eq!(
            errs,
            [
                "line 5 (SEP0011223344DD): unknown device pool \"hq\" (did you mean \"HQ\"?): add \
                 [device_pools.\"hq\"] to the inventory first, or leave DEVICE POOL empty (or \"Default\") for the \
                 cluster's settings",
                "line 6 (SEP0011223344EE): unknown device pool \"Lab\": add [device_pools.\"Lab\"] to the inventory \
                 first, or leave DEVICE POOL empty (or \"Default\") for the cluster's settings",
            ]
        );

        let csv: String = csv.lines().take(4).map(|l| format!("{l}\n")).collect();
        let planned =
            plan(&inventory, csv.as_bytes(), Options { update: false, ..Options::default() }, &mut Silent).unwrap();
        assert!(planned.report.ignored_columns.is_empty(), "{:?}", planned.report.ignored_columns);
        let written = apply(Path::new("inv.toml"), &text, &planned).unwrap();
        assert!(
            written.contains(
                "[devices.SEP0011223344AA]\nmodel = \"Cisco 8851\"\nprofile = \"8851 OAuth\"\npool = \"HQ\"\n"
            ),
            "{written}"
        );
        assert!(written.contains("[devices.SEP0011223344BB]\nmodel = \"Cisco 8851\"\nprofile = \"8851 OAuth\"\n\n"));
        let after = Inventory::parse(Path::new("inv.toml"), &written).unwrap();
        let pool = |n: &str| after.device(&DeviceName::parse_canonical(n).unwrap()).unwrap().pool.clone();
        assert_eq!(pool("SEP0011223344AA").as_deref(), Some("HQ"));
        assert_eq!((pool("SEP0011223344BB"), pool("SEP0011223344CC")), (None, None), "CUCM's Default: the cluster's");

        // An update with the column moves the device; the shared store's documents carry it too.
        let moved = "DEVICE NAME,DEVICE TYPE,DEVICE POOL,DEVICE SECURITY PROFILE\n\
                     SEP0011223344AA,Cisco 8851,Branch,8851 OAuth\n\
                     SEP001122334455,Cisco 8851,HQ,8851 OAuth\n";
        let planned =
            plan(&after, moved.as_bytes(), Options { update: true, ..Options::default() }, &mut Silent).unwrap();
        assert_eq!(planned.report.updated.len(), 2);
        let docs = apply_docs(&after, &planned).unwrap();
        assert_eq!(docs[0].1.pool.as_deref(), Some("Branch"));
        assert_eq!(docs[1].1.pool.as_deref(), Some("HQ"));
        let updated = apply(Path::new("inv.toml"), &written, &planned).unwrap();
        assert!(updated.contains("profile = \"8851 OAuth\"\npool = \"Branch\"\n"), "{updated}");
        // Without the column, an update keeps the device's pool.
        let kept = "DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE\nSEP0011223344AA,Cisco 8851,8851 OAuth\n";
        let planned =
            plan(&after, kept.as_bytes(), Options { update: true, ..Options::default() }, &mut Silent).unwrap();
        assert_eq!(planned.report.unchanged.len(), 1);
    }

    #[test]
    fn control_characters_and_bad_utf8_are_refused() {
        let mut csv = b"DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE,DESCRIPTION\n".to_vec();
        csv.extend_from_slice(b"CSFA,Cisco Unified Client Services Framework,CSF OAuth,\"bell\x07\"\n");
        csv.extend_from_slice(b"CSFB,Cisco Unified Client Services Framework,CSF OAuth,\xff\n");
        let errs = match plan(&inventory(), &csv, Options { update: false, ..Options::default() }, &mut Silent) {
            Err(ImportError::Rows(e)) => e.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            errs,
            ["line 2 (CSFA): DESCRIPTION holds a control character", "line 3: the row is not valid UTF-8 text"]
        );
    }
}
