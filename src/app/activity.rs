//! What each phone last did on this node: its last download (time, client address, file, answer,
//! User-Agent), for the management API's device status. Bounded: past [`MAX_SUBJECTS`] subjects, the
//! oldest half is forgotten. Kept in memory per node (a download never writes to a database).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::provision::subject::Subject;
use crate::util::time::Time;

/// How many subjects are remembered.
pub const MAX_SUBJECTS: usize = 200_000;

/// One download.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Download {
    pub at: Time,
    pub address: IpAddr,
    pub file: String,
    pub status: u16,
    pub user_agent: String,
}

/// The last download of each subject (`device:NAME`, `user:ID`).
#[derive(Debug, Default)]
pub struct Activity {
    last: Mutex<HashMap<Subject, Download>>,
}

impl Activity {
    /// Records a download by `subject`. Cheap when nothing changed but the time within the same second.
    pub fn downloaded(&self, subject: &Subject, download: impl FnOnce() -> Download) {
        let Ok(mut last) = self.last.lock() else { return };
        if last.len() >= MAX_SUBJECTS && !last.contains_key(subject) {
            let mut times: Vec<Time> = last.values().map(|d| d.at).collect();
            let (_, median, _) = times.select_nth_unstable(last.len() / 2);
            let cut = *median;
            last.retain(|_, d| d.at > cut);
        }
        let d = download();
        match last.get_mut(subject) {
            Some(existing) => *existing = d,
            None => {
                last.insert(subject.clone(), d);
            }
        }
    }

    pub fn last(&self, subject: &Subject) -> Option<Download> {
        self.last.lock().ok()?.get(subject).cloned()
    }

    /// The newest refused downloads (status 400 and above), newest first, with their subject.
    pub fn recent_refusals(&self, n: usize) -> Vec<(String, Download)> {
        let Ok(last) = self.last.lock() else { return Vec::new() };
        let mut refused: Vec<(String, Download)> =
            last.iter().filter(|(_, d)| d.status >= 400).map(|(s, d)| (s.to_string(), d.clone())).collect();
        refused.sort_by_key(|r| std::cmp::Reverse(r.1.at));
        refused.truncate(n);
        refused
    }

    /// Every subject's last download time.
    pub fn seen(&self) -> HashMap<Subject, Time> {
        self.last.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), v.at)).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_download_per_subject_is_kept() {
        let a = Activity::default();
        let d = |at, status| Download {
            at,
            address: "192.0.2.1".parse().unwrap(),
            file: "SEP001122334455.cnf.xml".into(),
            status,
            user_agent: "Cisco-CP8851".into(),
        };
        let s = |n: &str| Subject::parse(n).unwrap();
        a.downloaded(&s("device:SEP001122334455"), || d(10, 200));
        a.downloaded(&s("device:SEP001122334455"), || d(20, 304));
        assert_eq!(a.last(&s("device:SEP001122334455")), Some(d(20, 304)));
        assert_eq!(a.last(&s("device:SEP00112233445A")), None);
        assert_eq!(a.seen().len(), 1);
    }
}
