//! The record's rules, in a folder and shared through a store as the cluster's is.

use std::time::SystemTime;

use super::*;
use crate::tunnel::trust::{TunnelCa, connector_request, read_request};

const GRACE: Duration = Duration::from_secs(600);

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
    record.issued("desk-1", &first, 1_000).await.expect("first");
    assert_eq!(
        record.check("desk-1", &first, 5_000, GRACE).expect("read"),
        Ok(())
    );

    record
        .issued("desk-1", &second, 2_100)
        .await
        .expect("renewed");
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
        .issued("desk-1", &enrolled, 1_000)
        .await
        .expect("enrolled");
    record
        .issued("desk-1", &renewed, 1_000)
        .await
        .expect("renewed at once");
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
        .issued("desk-1", &newer, 2_100)
        .await
        .expect("issued");
    let again = Generations::new(dir.path());
    again
        .issued("desk-1", &older, 3_000)
        .await
        .expect("an older one");
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

/// A shared record in memory, versioned as the API server versions an object, which can be
/// made to lose the next `races` replacements to another writer.
#[derive(Default)]
struct Store {
    stored: Mutex<(Option<Vec<u8>>, u64)>,
    races: Mutex<usize>,
}

impl SharedRecord for Store {
    fn load(&self) -> Pending<'_, (Option<Vec<u8>>, String)> {
        let (bytes, version) = self.stored.lock().expect("store").clone();
        Box::pin(std::future::ready(Ok((bytes, version.to_string()))))
    }

    fn replace<'a>(&'a self, bytes: Vec<u8>, version: &'a str) -> Pending<'a, bool> {
        let mut stored = self.stored.lock().expect("store");
        let mut races = self.races.lock().expect("races");
        if *races > 0 {
            // Another dataplane writes first: the version moves on.
            *races -= 1;
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

#[tokio::test]
async fn dataplanes_sharing_a_record_refuse_a_certificate_another_one_replaced() {
    let ca = TunnelCa::generate("acme").expect("CA");
    let store = Arc::new(Store::default());
    let (zero, one) = (
        Generations::shared(store.clone()),
        Generations::shared(store.clone()),
    );
    let (first, second) = (cert(&ca, 100), cert(&ca, 2_000));
    zero.issued("desk-1", &first, 1_000)
        .await
        .expect("enrolled by dataplane 0");
    *store.races.lock().expect("races") = 2;
    one.issued("desk-1", &second, 2_100)
        .await
        .expect("renewed by dataplane 1, after losing two races");
    assert!(
        one.check("desk-1", &first, 2_100 + 600, GRACE)
            .expect("read")
            .is_err(),
        "the dataplane that renewed knows at once"
    );
    assert_eq!(
        zero.check("desk-1", &first, 2_100 + 600, GRACE)
            .expect("read"),
        Ok(()),
        "the other one, until the record is delivered"
    );
    let (bytes, _) = store.load().await.expect("load");
    zero.deliver(bytes.as_deref()).expect("delivered");
    assert!(
        zero.check("desk-1", &first, 2_100 + 600, GRACE)
            .expect("read")
            .is_err(),
        "and once it is, the copy of the old certificate is refused there too"
    );
    assert!(
        zero.current()
            .await
            .expect("read")
            .check("desk-1", &first, 2_100 + 600, GRACE)
            .is_err(),
        "a renewal decides on the stored record"
    );

    *store.races.lock().expect("races") = ATTEMPTS;
    let lost = zero.issued("desk-1", &cert(&ca, 3_000), 3_100).await;
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
