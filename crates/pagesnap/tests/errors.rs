//! Bad input is a typed error with a clear message, never a panic.

use pagesnap::{Error, Region, Tracking};

#[test]
fn zero_length() {
    let err = Region::builder(0).build().unwrap_err();
    assert!(matches!(err, Error::ZeroLength));
    assert_eq!(
        err.to_string(),
        "a region must be at least one page long (asked for 0 bytes)"
    );
}

#[test]
fn huge_length_overflows() {
    let err = Region::builder(usize::MAX).build().unwrap_err();
    assert!(matches!(err, Error::LengthOverflow { .. }), "{err}");
}

#[test]
fn length_rounds_up() {
    let r = Region::builder(1)
        .tracking(Tracking::Compare)
        .build()
        .unwrap();
    assert_eq!(r.len(), pagesnap::page_size());
}

#[test]
fn missing_backend_is_named() {
    for b in &pagesnap::probe().backends {
        if b.available {
            continue;
        }
        let err = Region::builder(4096)
            .tracking(b.tracking)
            .build()
            .unwrap_err();
        match &err {
            Error::Unavailable { backend, reason } => {
                assert_eq!(*backend, b.tracking);
                assert_eq!(reason, &b.reason);
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "tracking backend {:?} is unavailable: ",
                b.tracking
            )),
            "{text}"
        );
        eprintln!("{text}");
    }
}

#[test]
fn restore_of_another_length() {
    let page = pagesnap::page_size();
    let mut a = Region::builder(2 * page).build().unwrap();
    let mut b = Region::builder(3 * page).build().unwrap();
    let s = a.snapshot().unwrap();
    let err = b.restore(&s).unwrap_err();
    assert!(
        matches!(err, Error::LengthMismatch { snapshot, region } if snapshot == 2 * page && region == 3 * page)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cannot restore a snapshot of {} bytes into a region of {} bytes",
            2 * page,
            3 * page
        )
    );
}

#[test]
fn read_out_of_bounds() {
    let mut a = Region::builder(4096).build().unwrap();
    let s = a.snapshot().unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(
        s.read(s.len() - 4, &mut buf),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        s.read(usize::MAX, &mut buf),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(s.read(s.len() - 8, &mut buf).is_ok());
}

#[test]
fn tracking_names_round_trip() {
    for t in Tracking::ALL {
        assert_eq!(t.name().parse::<Tracking>().unwrap(), t);
    }
    assert!("bogus".parse::<Tracking>().is_err());
}
