//! The header's origin field (versions 3 and 4) and the older versions without it.

use super::format::*;

fn header(version: u32, origin: u64) -> Header {
    Header {
        version,
        kind: FileKind::Full,
        page_size: 4096,
        len: 1 << 20,
        parent: [0; 16],
        origin,
    }
}

#[test]
fn versions_3_and_4_keep_the_origin() {
    for v in [VERSION_TABLE_FIRST_ORIGIN, VERSION_TABLE_LAST_ORIGIN] {
        let h = header(v, 0x7f12_3456_7000);
        assert_eq!(Header::decode(&h.encode()), Ok(h));
    }
    assert!(!table_last(VERSION_TABLE_FIRST_ORIGIN));
    assert!(table_last(VERSION_TABLE_LAST_ORIGIN));
}

#[test]
fn versions_1_and_2_still_read_without_an_origin() {
    for v in [VERSION_TABLE_FIRST, VERSION_TABLE_LAST] {
        // An older writer never wrote bytes 48..56: the origin reads as unknown.
        let bytes = header(v, 0x7f12_3456_7000).encode();
        assert!(bytes[48..60].iter().all(|&b| b == 0));
        assert_eq!(Header::decode(&bytes), Ok(header(v, 0)));
    }
    assert!(!table_last(VERSION_TABLE_FIRST));
    assert!(table_last(VERSION_TABLE_LAST));
}

#[test]
fn reserved_bytes_stay_checked() {
    let reseal = |b: &mut [u8; HEADER_LEN as usize]| {
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
    };
    // In version 2, byte 48 is reserved.
    let mut b = header(VERSION_TABLE_LAST, 0).encode();
    b[48] = 1;
    reseal(&mut b);
    assert!(matches!(Header::decode(&b), Err(Bad::Field(20, _))));
    // In version 4 it is the origin, and 56..60 stay reserved.
    let mut b = header(VERSION_TABLE_LAST_ORIGIN, 0).encode();
    b[48] = 1;
    reseal(&mut b);
    assert_eq!(Header::decode(&b).map(|h| h.origin), Ok(1));
    b[56] = 1;
    reseal(&mut b);
    assert!(matches!(Header::decode(&b), Err(Bad::Field(20, _))));
}
