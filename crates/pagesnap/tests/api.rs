//! The public API's promises that the type system can check, and the digest format.

use pagesnap::{Digest, PageStore, Region, Snapshot, Tracking};

fn send<T: Send>() {}
fn send_sync<T: Send + Sync>() {}
fn copy_eq_debug<T: Copy + Eq + std::fmt::Debug>() {}

#[test]
fn thread_safety_and_derives() {
    send::<Region>();
    send_sync::<Snapshot>();
    send_sync::<PageStore>();
    copy_eq_debug::<Tracking>();
    copy_eq_debug::<Digest>();
    fn hash<T: std::hash::Hash>() {}
    hash::<Digest>();
}

#[test]
fn digest_displays_as_32_lowercase_hex() {
    let mut r = Region::builder(4096)
        .tracking(Tracking::Compare)
        .build()
        .unwrap();
    r.as_mut_slice()[0] = 0xAB;
    let d = r.snapshot().unwrap().digest();
    let text = d.to_string();
    assert_eq!(text.len(), 32);
    assert!(
        text.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{text}"
    );
    assert_eq!(Digest::from_bytes(d.to_bytes()), d);
}

#[test]
fn digests_follow_contents_not_history() {
    // The same bytes reached by different write orders and in different regions
    // give one digest; one differing byte gives another.
    let page = pagesnap::page_size();
    let mut a = Region::builder(300 * page).build().unwrap();
    let mut b = Region::builder(300 * page).build().unwrap();
    a.as_mut_slice()[5 * page] = 1;
    a.as_mut_slice()[250 * page] = 2;
    let _ = a.snapshot().unwrap();
    a.as_mut_slice()[7] = 3;
    let da = a.snapshot().unwrap().digest();
    b.as_mut_slice()[7] = 3;
    b.as_mut_slice()[250 * page] = 2;
    b.as_mut_slice()[5 * page] = 1;
    let sb = b.snapshot().unwrap();
    assert_eq!(da, sb.digest());
    b.as_mut_slice()[299 * page + 1] = 1;
    assert_ne!(b.snapshot().unwrap().digest(), da);
    // Cloned handles are the same snapshot.
    let c = sb.clone();
    assert!(c.ptr_eq(&sb));
    // A different length with the same (zero) contents differs too.
    let mut z1 = Region::builder(page).build().unwrap();
    let mut z2 = Region::builder(2 * page).build().unwrap();
    assert_ne!(
        z1.snapshot().unwrap().digest(),
        z2.snapshot().unwrap().digest()
    );
}

#[test]
fn forced_backend_by_environment_variable() {
    // Run in a child so the variable does not leak into other tests.
    if let Ok(want) = std::env::var("PAGESNAP_API_CHILD") {
        let r = Region::builder(4096).build().unwrap();
        assert_eq!(r.tracking().name(), want);
        println!("child-ok {}", r.tracking());
        return;
    }
    for t in [Tracking::Mprotect, Tracking::Compare] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "forced_backend_by_environment_variable",
                "--nocapture",
            ])
            .env("PAGESNAP_TRACKING", t.name())
            .env("PAGESNAP_API_CHILD", t.name())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("child-ok"),
            "{t}: {stdout}"
        );
    }
    // A bad value is a typed error naming it.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "bad_tracking_variable_child", "--nocapture"])
        .env("PAGESNAP_TRACKING", "turbo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_tracking_variable_child() {
    if std::env::var("PAGESNAP_TRACKING").as_deref() != Ok("turbo") {
        return; // only meaningful in the child spawned above
    }
    let err = Region::builder(4096).build().unwrap_err();
    assert!(
        matches!(err, pagesnap::Error::BadTrackingVariable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"turbo\""), "{err}");
}
