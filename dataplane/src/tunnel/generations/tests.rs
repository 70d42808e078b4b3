//! The record's rules, in a folder and shared through a store as the cluster's is.

use std::time::SystemTime;

use super::*;
use crate::tunnel::trust::{TunnelCa, connector_request, read_request};

const GRACE: Duration = Duration::from_secs(600);

/// A condition that always holds: an enrollment's.
const ANY: fn(&Snapshot) -> Result<(), Superseded> = |_| Ok(());

/// A certificate for `desk-1` starting at `start` (seconds since the Unix epoch).
fn cert(ca: &TunnelCa, start: u64) -> CertificateDer<'static> {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
    let request = read_request(&connector_request("desk-1").expect("request").1);
    ca.sign_between(
        request.expect("read"),
        "desk-1",
        start,
        start + GRACE * 1000,
    )
    .expect("signed")
}

#[tokio::test]
async fn an_older_certificate_works_for_the_grace_period_after_a_newer_one_then_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TunnelCa::generate("acme").expect("CA");
    let record = Generations::new(dir.path());
    let (first, second) = (cert(&ca, 100), cert(&ca, 2_000));
    assert_eq!(
        record.check("desk-1", &first, 1_000, GRACE).expect("read"),
        Ok(()),
        "no record: enrolled before records were kept"
    );
    record
        .issued("desk-1", &first, 1_000, &ANY)
        .await
        .expect("first")
        .expect("recorded");
    assert_eq!(
        record.check("desk-1", &first, 5_000, GRACE).expect("read"),
        Ok(())
    );

    record
        .issued("desk-1", &second, 2_100, &ANY)
        .await
        .expect("renewed")
        .expect("recorded");
    assert_eq!(
        record.check("desk-1", &second, 9_000, GRACE).expect("read"),
        Ok(()),
        "the newest always works"
    );
    assert_eq!(
        record
            .check("desk-1", &first, 2_100 + 599, GRACE)
            .expect("read"),
        Ok(()),
        "the older one, within the grace period"
    );
    assert_eq!(
        record
            .check("desk-1", &first, 2_100 + 600, GRACE)
            .expect("read"),
        Err(Superseded {
            id: "desk-1".into(),
            ago: 600
        }),
        "and not after it"
    );
    assert_eq!(
        record.check("desk-2", &first, 9_000, GRACE).expect("read"),
        Ok(()),
        "other connectors are not concerned"
    );
}

#[tokio::test]
async fn of_two_certificates_with_the_same_start_the_one_signed_last_is_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TunnelCa::generate("acme").expect("CA");
    let record = Generations::new(dir.path());
    let (enrolled, renewed) = (cert(&ca, 100), cert(&ca, 100));
    record
        .issued("desk-1", &enrolled, 1_000, &ANY)
        .await
        .expect("enrolled")
        .expect("recorded");
    record
        .issued("desk-1", &renewed, 1_000, &ANY)
        .await
        .expect("renewed at once")
        .expect("recorded");
    assert_eq!(
        record
            .check("desk-1", &renewed, 1_000, Duration::ZERO)
            .expect("read"),
        Ok(())
    );
    assert!(
        record
            .check("desk-1", &enrolled, 1_000, Duration::ZERO)
            .expect("read")
            .is_err(),
        "a copy of the first certificate stops working"
    );
}

#[tokio::test]
async fn the_record_survives_a_restart_and_never_moves_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TunnelCa::generate("acme").expect("CA");
    let (older, newer) = (cert(&ca, 1_000), cert(&ca, 2_000));
    Generations::new(dir.path())
        .issued("desk-1", &newer, 2_100, &ANY)
        .await
        .expect("issued")
        .expect("recorded");
    let again = Generations::new(dir.path());
    let refused = again.issued("desk-1", &older, 3_000, &ANY).await;
    assert!(
        matches!(&refused, Err(TokenError::Store(why)) if why.contains("starts later")),
        "a certificate starting before the recorded one is not recorded, and not given: {refused:?}"
    );
    assert!(
        again
            .check("desk-1", &older, 9_000, GRACE)
            .expect("read")
            .is_err(),
        "the newer certificate still rules"
    );
    assert!(
        !dir.path().join("generations.json.new").exists(),
        "nothing is left beside the record"
    );
}

/// A change another dataplane makes to a shared record just before a replacement.
type Interloper = Box<dyn FnOnce(&mut Option<Vec<u8>>) + Send>;

/// A shared record in memory, versioned as the API server versions an object; each queued
/// interloper changes it just before a replacement, which then fails as it would when another
/// dataplane wrote first.
#[derive(Default)]
struct Store {
    stored: Mutex<(Option<Vec<u8>>, u64)>,
    interlopers: Mutex<Vec<Interloper>>,
}

impl Store {
    fn interlope(&self, change: impl FnOnce(&mut Option<Vec<u8>>) + Send + 'static) {
        self.interlopers
            .lock()
            .expect("interlopers")
            .push(Box::new(change));
    }
}

impl SharedRecord for Store {
    fn load(&self) -> Pending<'_, (Option<Vec<u8>>, String)> {
        let (bytes, version) = self.stored.lock().expect("store").clone();
        Box::pin(std::future::ready(Ok((bytes, version.to_string()))))
    }

    fn replace<'a>(&'a self, bytes: Vec<u8>, version: &'a str) -> Pending<'a, bool> {
        let mut stored = self.stored.lock().expect("store");
        if let Some(change) = self.interlopers.lock().expect("interlopers").pop() {
            change(&mut stored.0);
            stored.1 += 1;
        }
        let replaced = stored.1.to_string() == version;
        if replaced {
            *stored = (Some(bytes), stored.1 + 1);
        }
        Box::pin(std::future::ready(Ok(replaced)))
    }

    fn describe(&self) -> String {
        "the test's store".into()
    }
}

/// Adds connector `id`'s `cert` to the record in `bytes`, as another dataplane would.
fn record_elsewhere(bytes: &mut Option<Vec<u8>>, id: &str, cert: &CertificateDer<'_>) {
    let mut record: Record = bytes
        .as_deref()
        .map(|b| serde_json::from_slice(b).expect("a record"))
        .unwrap_or_default();
    newer(&mut record, id, cert, 2_050).expect("recorded");
    *bytes = Some(serde_json::to_vec(&record).expect("JSON"));
}

#[tokio::test]
async fn dataplanes_sharing_a_record_refuse_a_certificate_another_one_replaced() {
    let ca = TunnelCa::generate("acme").expect("CA");
    let store = Arc::new(Store::default());
    let (zero, one) = (
        Generations::shared(store.clone()),
        Generations::shared(store.clone()),
    );
    assert!(
        zero.snapshot().is_err(),
        "before the record is read, nothing is known, and connections wait"
    );
    let (first, second) = (cert(&ca, 100), cert(&ca, 2_000));
    zero.issued("desk-1", &first, 1_000, &ANY)
        .await
        .expect("enrolled by dataplane 0")
        .expect("recorded");
    // Dataplane 1 loses two races: another dataplane records desk-2 meanwhile, then a write
    // changes nothing but the version.
    let other = cert(&ca, 1_500);
    store.interlope(|_| {});
    store.interlope(move |bytes| record_elsewhere(bytes, "desk-2", &other));
    one.issued("desk-1", &second, 2_100, &ANY)
        .await
        .expect("renewed by dataplane 1, after losing two races")
        .expect("recorded");
    let stored = one.current().await.expect("read");
    assert!(
        stored.check("desk-2", &first, 2_100 + 600, GRACE).is_err()
            && stored.check("desk-1", &first, 2_100 + 600, GRACE).is_err(),
        "both renewals are in the record: neither overwrote the other"
    );
    assert_eq!(
        zero.check("desk-1", &first, 2_100 + 600, GRACE)
            .expect("read"),
        Ok(()),
        "dataplane 0 checks connections against its copy until the record is delivered"
    );
    let (bytes, _) = store.load().await.expect("load");
    zero.deliver(bytes.as_deref()).expect("delivered");
    assert!(
        zero.check("desk-1", &first, 2_100 + 600, GRACE)
            .expect("read")
            .is_err(),
        "and once it is, the copy of the old certificate is refused there too"
    );

    // A renewal decided on the record before another dataplane recorded a newer certificate
    // is decided again on the record it would write to, and refused.
    let newest = cert(&ca, 4_000);
    store.interlope(move |bytes| record_elsewhere(bytes, "desk-1", &newest));
    let second_is_newest =
        |record: &Snapshot| record.check("desk-1", &second, 4_100, Duration::ZERO);
    let decided_again = zero
        .issued("desk-1", &cert(&ca, 3_000), 3_100, &second_is_newest)
        .await
        .expect("read and written");
    assert!(decided_again.is_err(), "{decided_again:?}");

    for _ in 0..ATTEMPTS {
        store.interlope(|_| {});
    }
    let lost = zero.issued("desk-1", &cert(&ca, 5_000), 5_100, &ANY).await;
    assert!(
        matches!(&lost, Err(TokenError::Store(why)) if why.contains("kept changing")),
        "{lost:?}"
    );
    assert!(
        zero.deliver(Some(b"not json")).is_err(),
        "bytes that are not a record are refused"
    );
    assert!(
        zero.check("desk-1", &first, 2_100 + 600, GRACE)
            .expect("read")
            .is_err(),
        "and the last good copy stays"
    );
}

#[tokio::test]
async fn a_shared_record_adopts_what_the_folder_knew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TunnelCa::generate("acme").expect("CA");
    let folder = Generations::new(dir.path());
    let (old, renewed, elsewhere) = (cert(&ca, 100), cert(&ca, 2_000), cert(&ca, 3_000));
    folder
        .issued("desk-1", &renewed, 2_100, &ANY)
        .await
        .expect("renewed")
        .expect("recorded");
    folder
        .issued("desk-2", &old, 200, &ANY)
        .await
        .expect("enrolled")
        .expect("recorded");
    let shared = Generations::shared(Arc::new(Store::default()));
    shared
        .issued("desk-2", &elsewhere, 3_100, &ANY)
        .await
        .expect("renewed at another dataplane")
        .expect("recorded");
    assert_eq!(shared.adopt(dir.path()).await.expect("adopted"), 1);
    let record = shared.snapshot().expect("known");
    assert!(
        record.check("desk-1", &old, 9_000, GRACE).is_err(),
        "the folder's renewal is shared"
    );
    assert!(
        record.check("desk-2", &old, 9_000, GRACE).is_err(),
        "and a later one recorded elsewhere is kept"
    );
    assert_eq!(shared.adopt(dir.path()).await.expect("again"), 0);
}
