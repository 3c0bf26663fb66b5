//! Logging: human-readable or JSON on standard error, and the audit log (one JSON line per request).

use std::io::IsTerminal;
use std::sync::Arc;

use crate::ops::audit::{AuditGuard, AuditLog, AuditStats};

/// Logging for the commands: human-readable on standard error (`SIPCFG_LOG` filters, default `info`).
pub fn init_logging() {
    let _ = init_logging_with(&crate::config::LogConfig::default());
}

/// Logging for `serve`: text or JSON on standard error, and the audit log (JSON lines of the
/// `sipcfg::access` events) when configured. The returned guard writes what the audit log still holds when
/// dropped; its counters go to `/metrics`.
pub fn init_logging_with(log: &crate::config::LogConfig) -> Result<Option<Audit>, String> {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIPCFG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (subscriber, audit) = log_subscriber(log, filter)?;
    let _ = subscriber.try_init();
    Ok(audit)
}

/// The audit log of a running `serve`: dropping the guard writes what is left and stops its writer.
pub struct Audit {
    pub guard: AuditGuard,
    pub stats: Arc<AuditStats>,
}

type Subscriber = Box<dyn tracing::Subscriber + Send + Sync>;

/// The subscriber [`init_logging_with`] installs. Without an audit file it holds the console layer alone: an
/// absent (`None`) layer declares every event of every target enabled, so each request built its disabled
/// access line (the escaped path, the subject as a string, a clock read) only for the filter to drop it:
/// 12% of a keep-alive revalidation's instructions.
fn log_subscriber(
    log: &crate::config::LogConfig,
    filter: tracing_subscriber::EnvFilter,
) -> Result<(Subscriber, Option<Audit>), String> {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    // Colours only for a person at a terminal (and never with NO_COLOR): the journal and files get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let console = match log.format {
        crate::config::LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
        }
        crate::config::LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter);
    let registry = tracing_subscriber::registry().with(console);
    let Some(path) = &log.audit_file else { return Ok((Box::new(registry), None)) };
    let (audit, guard) = AuditLog::open(path, log.audit_buffer_bytes).map_err(|e| e.to_string())?;
    let stats = audit.stats();
    let audit = audit.with_filter(Targets::new().with_target("sipcfg::access", tracing::Level::INFO));
    Ok((Box::new(registry.with(audit)), Some(Audit { guard, stats })))
}

#[cfg(test)]
mod tests {
    use super::log_subscriber;
    use crate::config::LogConfig;
    use tracing_subscriber::EnvFilter;

    /// Whether `serve`'s subscriber, with this configuration and console filter, wants access lines.
    fn access_lines_wanted(log: &LogConfig, filter: &str) -> bool {
        let (subscriber, _guard) = log_subscriber(log, EnvFilter::new(filter)).expect("the subscriber builds");
        tracing::subscriber::with_default(
            subscriber,
            || tracing::enabled!(target: "sipcfg::access", tracing::Level::INFO),
        )
    }

    #[test]
    fn access_lines_are_built_only_when_something_writes_them() {
        let console_only = LogConfig::default();
        assert!(access_lines_wanted(&console_only, "info"));
        assert!(!access_lines_wanted(&console_only, "warn"), "filtered out and no audit file: not built");
        assert!(!access_lines_wanted(&console_only, "info,sipcfg::access=off"));
        let dir = tempfile::tempdir().expect("tempdir");
        let audited = LogConfig { audit_file: Some(dir.path().join("audit.jsonl")), ..LogConfig::default() };
        assert!(access_lines_wanted(&audited, "warn"), "the audit file wants every access line");
    }
}
