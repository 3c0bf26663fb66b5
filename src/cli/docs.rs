//! `sipcfg manpage` and `sipcfg completions`: the command line described for man and the shells.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::util::fsutil::atomic_write;

/// The command line as clap describes it, as man pages and completions need it.
fn clap_command() -> clap::Command {
    Cli::command().disable_help_subcommand(true)
}

/// `manpage --out DIR`: sipcfg.1 and one page per subcommand, nested ones too (sipcfg-cluster-set.1), each
/// with ENVIRONMENT, FILES and EXAMPLES sections after clap's own.
pub(crate) fn manpage(out: &Path) -> Result<ExitCode, String> {
    fn pages(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), String> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub, out)?;
        }
        let source = format!("sipcfg {}", env!("CARGO_PKG_VERSION"));
        let man = clap_mangen::Man::new(cmd.clone()).source(source);
        let name = man.get_filename();
        let page = render_page(&man, cmd, name.trim_end_matches(".1"))
            .map_err(|e| format!("cannot render the man page of {}: {e}", cmd.get_name()))?;
        out.push((name, page));
        Ok(())
    }
    let mut cmd = clap_command();
    cmd.build();
    let mut rendered = Vec::new();
    pages(&cmd, &mut rendered)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create the folder: {e}", out.display()))?;
    rendered.sort();
    for (name, page) in &rendered {
        let path = out.join(name);
        atomic_write(&path, page).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    println!("{}: {} manual pages written", out.display(), rendered.len());
    Ok(ExitCode::SUCCESS)
}

/// One page: clap's sections, then ours, then the version.
fn render_page(man: &clap_mangen::Man, cmd: &clap::Command, page: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    out.extend_from_slice(ENVIRONMENT.as_bytes());
    out.extend_from_slice(FILES.as_bytes());
    let examples = examples(page);
    if !examples.is_empty() {
        out.extend_from_slice(b".SH EXAMPLES\n");
        for (what, command) in examples {
            out.extend_from_slice(format!(".TP\n{}\n.nf\n{}\n.fi\n", roff_text(what), roff_text(command)).as_bytes());
        }
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

/// Text for roff: backslashes doubled, and a leading `.` or `'` made literal.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') { format!("\\&{escaped}") } else { escaped }
}

const ENVIRONMENT: &str = ".SH ENVIRONMENT
.TP
.B SIPCFG_CONFIG
The configuration file, when \\fB\\-c\\fR is not given.
.TP
.B SIPCFG_LOG
What is logged on standard error, in tracing's filter syntax (default \\fBinfo\\fR; e.g. \\fBdebug\\fR,
\\fBinfo,sipcfg::access=warn\\fR).
.TP
.B NO_COLOR
When set, the log has no terminal colours.
.TP
.B NOTIFY_SOCKET, WATCHDOG_USEC
Set by systemd: \\fBsipcfg serve\\fR then reports readiness, reloads and shutdown, and pings the watchdog.
";

const FILES: &str = ".SH FILES
.TP
.I /etc/sipcfg/sipcfg.toml
The configuration, used when neither \\fB\\-c\\fR nor \\fBSIPCFG_CONFIG\\fR is given (from the root of a
source checkout, \\fIexample/sipcfg.toml\\fR instead).
.TP
.I /etc/sipcfg/inventory.toml
Devices, users, phone security profiles and cluster settings (\\fB[inventory] file\\fR).
.TP
.I /etc/sipcfg/tls/
The server certificate chain and its key (\\fB[tls]\\fR).
.TP
.I /etc/sipcfg/keys/
The token signing key pair the package generates (\\fB[auth]\\fR).
.TP
.I /etc/sipcfg/phone\\-edge\\-trust/
The Phone\\-Edge\\-Trust certificates (\\fBsipcfg cert\\fR).
.TP
.I /etc/sipcfg/tomcat\\-trust/
The Tomcat\\-trust certificates the edge listener checks Expressway\\-C certificates against (\\fBsipcfg cert\\fR).
.TP
.I /var/lib/sipcfg/sipcfg.db
The token service's state: activation codes, refresh tokens, revocations, signing keys; the administrator
accounts and the audit trail (\\fB[state]\\fR).
.TP
.I /var/lib/sipcfg/files/
Common files: ring lists, dial plans, locales, firmware (\\fB[files] root\\fR).
.TP
.I /var/log/sipcfg/audit.log
One JSON line per request (\\fB[log] audit_file\\fR); never a token.
.TP
.I /usr/share/sipcfg/templates/
The shipped templates (\\fB[inventory] templates\\fR); replaced on upgrade.
.TP
.I /usr/share/doc/sipcfg/
The documentation: configuration, inventory, operations, security, the SIP OAuth task flow.
";

/// Worked examples per page (by its file name without `.1`).
fn examples(page: &str) -> &'static [(&'static str, &'static str)] {
    match page {
        "sipcfg" => &[
            ("Check the installed deployment, then serve it:", "sipcfg check\nsipcfg serve"),
            ("What a phone would receive:", "sipcfg render SEP001122334455.cnf.xml"),
            ("Another configuration, before or after the command:", "sipcfg -c /srv/site2/sipcfg.toml check"),
        ],
        "sipcfg-serve" => &[
            ("As the systemd unit runs it:", "sipcfg serve --config /etc/sipcfg/sipcfg.toml"),
            (
                "A second node on other ports of the same machine:",
                "sipcfg serve --listen 127.0.0.1:16971 --admin-listen 127.0.0.1:19971",
            ),
        ],
        "sipcfg-check" => {
            &[("Before a restart or a package upgrade:", "sipcfg check --config /etc/sipcfg/sipcfg.toml")]
        }
        "sipcfg-render" => &[
            ("One device's file:", "sipcfg render SEP001122334455.cnf.xml"),
            ("Every file, to compare before and after a template change:", "sipcfg render --all --out /tmp/before"),
        ],
        "sipcfg-import" => &[
            ("Check a BAT export without writing anything:", "sipcfg import --dry-run phones.csv"),
            (
                "Add the phones, replacing the imported fields of those already there:",
                "sipcfg import --update phones.csv",
            ),
        ],
        "sipcfg-token" => &[
            ("A token for one phone, for a test with curl:", "sipcfg token --device SEP001122334455"),
            ("A user's token, valid ten minutes:", "sipcfg token --user jsmith --ttl 600"),
        ],
        "sipcfg-token-revoke" => &[("A stolen phone:", "sipcfg token revoke --device SEP001122334455")],
        "sipcfg-activation-code" | "sipcfg-activation-code-create" => &[
            (
                "A code for a new phone, valid 3 days:",
                "sipcfg activation-code create --device SEP001122334455 --valid 3",
            ),
            ("Codes not yet used:", "sipcfg activation-code list"),
        ],
        "sipcfg-keys" | "sipcfg-keys-rotate" => {
            &[("A new signing key (the old one verifies until its tokens expire):", "sipcfg keys rotate")]
        }
        "sipcfg-sip-oauth-mode" => &[("CUCM's utils sipOAuth-mode enable:", "sipcfg sip-oauth-mode enable")],
        "sipcfg-cluster" | "sipcfg-cluster-set" => &[(
            "The refresh login flow, then the ports:",
            "sipcfg cluster set --refresh-login-flow on\nsipcfg cluster set --sip-oauth-port 5090 --sip-mra-oauth-port 5091",
        )],
        "sipcfg-cert" | "sipcfg-cert-add" => &[
            ("The CA that issued the server certificate:", "sipcfg cert add --purpose phone-edge-trust ca.pem"),
            ("What the store holds:", "sipcfg cert list"),
            (
                "The CA of the Expressway-C certificates (or a chain file, or its self-signed certificate):",
                "sipcfg cert add --purpose tomcat-trust expressway-ca.pem",
            ),
        ],
        "sipcfg-edge" | "sipcfg-edge-list" => {
            &[("The Expressway-C proxies and the names their certificates must carry:", "sipcfg edge list")]
        }
        "sipcfg-admin" | "sipcfg-admin-add" => &[
            ("An operator account; its generated password is printed once:", "sipcfg admin add jsmith --role operator"),
            (
                "An admin account with a password of your own:",
                "printf '%s\\n' \"$PASSWORD\" | sipcfg admin add ops-lead --role admin --password-stdin",
            ),
            ("The accounts:", "sipcfg admin list"),
        ],
        "sipcfg-admin-token" => &[(
            "A token for a script, sent as a bearer token:",
            "TOKEN=$(sipcfg admin token automation)\ncurl -H \"Authorization: Bearer $TOKEN\" https://127.0.0.1:8443/api/v1/devices",
        )],
        "sipcfg-admin-passwd" => &[("A forgotten password:", "sipcfg admin passwd jsmith")],
        "sipcfg-manpage" => &[("The pages of this version:", "sipcfg manpage --out /usr/local/share/man/man1")],
        "sipcfg-completions" => &[(
            "Bash completion for the current user:",
            "sipcfg completions bash > ~/.local/share/bash-completion/completions/sipcfg",
        )],
        _ => &[],
    }
}

/// `completions SHELL`: the script on standard output.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<ExitCode, String> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut clap_command(), "sipcfg", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(format!("cannot write the completion script: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::clap_command;

    /// Every command and every option of every command says what it is for (`--help`, man pages).
    #[test]
    fn every_command_and_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name()).trim().to_owned();
            if cmd.get_about().is_none() && path.contains(' ') {
                missing.push(format!("{here}: the command has no help"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{here}: {id} has no help"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &here, missing);
            }
        }
        let mut cmd = clap_command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
