//! Notices when the policy files change, so a dataplane reloads them without a signal: an
//! edited file on a laptop, or a policy ConfigMap that the kubelet has swapped in.
//!
//! Invariants: a change is a change of content (not of timestamps), so a file rewritten with
//! the same bytes reloads nothing and one rewritten twice within a second is not missed;
//! entries whose names start with `.` are skipped (a ConfigMap volume's `..data` and its
//! timestamped folders are reached through the visible links); a file that cannot be read
//! counts as its own state, so a file that disappears or comes back is a change.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A digest of what `paths` hold: every file, and every visible file under each folder.
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        add(path, &mut hasher);
    }
    hasher.finish()
}

fn add(path: &Path, hasher: &mut DefaultHasher) {
    path.hash(hasher);
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
            .map(|entry| entry.path())
            .collect();
        entries.sort();
        for entry in entries {
            add(&entry, hasher);
        }
    } else {
        std::fs::read(path).ok().hash(hasher);
    }
}

/// Calls `changed` each time what `paths` hold differs from the last look, looking every
/// `every`, for as long as it runs.
pub async fn watch(paths: Vec<PathBuf>, every: Duration, changed: impl Fn()) {
    let mut last = fingerprint(&paths);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = fingerprint(&paths);
        if now != last {
            last = now;
            changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_changes_count_and_hidden_entries_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("policies");
        std::fs::create_dir_all(folder.join("..data")).expect("folders");
        std::fs::write(folder.join("a.yaml"), "one").expect("write");
        let paths = vec![folder.clone()];
        let first = fingerprint(&paths);
        std::fs::write(folder.join("a.yaml"), "one").expect("same bytes");
        assert_eq!(fingerprint(&paths), first, "same content, no change");
        std::fs::write(folder.join("..data").join("b.yaml"), "hidden").expect("hidden");
        assert_eq!(fingerprint(&paths), first, "hidden entries are skipped");
        std::fs::write(folder.join("a.yaml"), "two").expect("rewrite");
        let second = fingerprint(&paths);
        assert_ne!(second, first, "new content is a change");
        std::fs::remove_file(folder.join("a.yaml")).expect("remove");
        assert_ne!(fingerprint(&paths), second, "a removed file is a change");
        let missing = vec![dir.path().join("absent.yaml")];
        assert_eq!(fingerprint(&missing), fingerprint(&missing));
    }

    #[tokio::test(start_paused = true)]
    async fn watching_reports_each_change_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "v1").expect("write");
        let changes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = changes.clone();
        let watching = tokio::spawn(watch(
            vec![file.clone()],
            Duration::from_secs(2),
            move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(changes.load(std::sync::atomic::Ordering::SeqCst), 0);
        std::fs::write(&file, "v2").expect("write");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(changes.load(std::sync::atomic::Ordering::SeqCst), 1);
        watching.abort();
    }
}
