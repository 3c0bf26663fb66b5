//! What each phone last did on this node: its last download (time, client address, file, answer,
//! User-Agent), for the management API's device status. Bounded: past [`MAX_SUBJECTS`] subjects, the
//! oldest half is forgotten. A download never waits for a database: the downloads recorded since the last
//! flush are written to the store every few seconds ([`Activity::take_unsaved`], `ops`), so that every
//! node's console sees what any node served.

use std::collections::HashMap;
use std::sync::Mutex;

pub use crate::auth::accounts::Download;
use crate::provision::subject::Subject;
use crate::util::time::Time;

/// How many subjects are remembered.
pub const MAX_SUBJECTS: usize = 200_000;

/// The last download of each subject (`device:NAME`, `user:ID`).
#[derive(Debug, Default)]
pub struct Activity {
    last: Mutex<HashMap<Subject, (Download, bool)>>,
}

impl Activity {
    /// Records a download by `subject`. Cheap when nothing changed but the time within the same second.
    ///
    /// A download like the last one recorded (same second, answer, address and file) changes nothing and
    /// allocates nothing: a phone's keep-alive revalidations cost a lock and a lookup, not a record each.
    pub fn downloaded(
        &self,
        subject: &Subject,
        seen: (Time, u16, std::net::IpAddr, &str),
        download: impl FnOnce() -> Download,
    ) {
        let Ok(mut last) = self.last.lock() else { return };
        let (at, status, address, file) = seen;
        if let Some((d, _)) = last.get(subject)
            && d.at == at
            && d.status == status
            && d.address == address
            && d.file == file
        {
            return;
        }
        if last.len() >= MAX_SUBJECTS && !last.contains_key(subject) {
            let mut times: Vec<Time> = last.values().map(|(d, _)| d.at).collect();
            let (_, median, _) = times.select_nth_unstable(last.len() / 2);
            let cut = *median;
            last.retain(|_, (d, _)| d.at > cut);
        }
        let d = download();
        match last.get_mut(subject) {
            Some(existing) => *existing = (d, true),
            None => {
                last.insert(subject.clone(), (d, true));
            }
        }
    }

    pub fn last(&self, subject: &Subject) -> Option<Download> {
        self.last.lock().ok()?.get(subject).map(|(d, _)| d.clone())
    }

    /// The newest refused downloads (status 400 and above), newest first, with their subject.
    pub fn recent_refusals(&self, n: usize) -> Vec<(String, Download)> {
        let Ok(last) = self.last.lock() else { return Vec::new() };
        let mut refused: Vec<(String, Download)> =
            last.iter().filter(|(_, (d, _))| d.status >= 400).map(|(s, (d, _))| (s.to_string(), d.clone())).collect();
        refused.sort_by_key(|r| std::cmp::Reverse(r.1.at));
        refused.truncate(n);
        refused
    }

    /// Every subject's last download time.
    pub fn seen(&self) -> HashMap<Subject, Time> {
        self.last.lock().map(|m| m.iter().map(|(k, (d, _))| (k.clone(), d.at)).collect()).unwrap_or_default()
    }

    /// The downloads recorded since the last call, to write to the store; they count as saved from now.
    pub fn take_unsaved(&self) -> Vec<(String, Download)> {
        let Ok(mut last) = self.last.lock() else { return Vec::new() };
        last.iter_mut()
            .filter(|(_, (_, unsaved))| *unsaved)
            .map(|(s, (d, unsaved))| {
                *unsaved = false;
                (s.to_string(), d.clone())
            })
            .collect()
    }

    /// Marks downloads that could not be written as unsaved again (unless newer ones came meanwhile).
    pub fn unsaved_again(&self, batch: &[(String, Download)]) {
        let Ok(mut last) = self.last.lock() else { return };
        for (subject, d) in batch {
            if let Some(s) = Subject::parse(subject)
                && let Some((current, unsaved)) = last.get_mut(&s)
                && current.at == d.at
            {
                *unsaved = true;
            }
        }
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
        let seen = |at, status| (at, status, "192.0.2.1".parse().unwrap(), "SEP001122334455.cnf.xml");
        a.downloaded(&s("device:SEP001122334455"), seen(10, 200), || d(10, 200));
        a.downloaded(&s("device:SEP001122334455"), seen(20, 304), || d(20, 304));
        a.downloaded(&s("device:SEP001122334455"), seen(20, 304), || panic!("the same download again: no record"));
        assert_eq!(a.last(&s("device:SEP001122334455")), Some(d(20, 304)));
        assert_eq!(a.last(&s("device:SEP00112233445A")), None);
        assert_eq!(a.seen().len(), 1);
        let batch = a.take_unsaved();
        assert_eq!(batch, vec![("device:SEP001122334455".to_owned(), d(20, 304))]);
        assert!(a.take_unsaved().is_empty(), "saved once");
        a.unsaved_again(&batch);
        assert_eq!(a.take_unsaved().len(), 1, "a failed write is tried again");
    }
}
