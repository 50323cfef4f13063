/* Snapshot / restore round trips through the C API, on every tracking backend
 * this machine offers. */
#include <stdint.h>

#include "check.h"

static const int BACKENDS[] = {PS_TRACKING_AUTO, PS_TRACKING_UFFD_WP, PS_TRACKING_SOFT_DIRTY,
                               PS_TRACKING_MPROTECT, PS_TRACKING_COMPARE};

static int same_digest(const ps_snapshot *a, const ps_snapshot *b) {
    uint8_t da[16], db[16];
    CHECK(ps_snapshot_digest(a, da) == 0);
    CHECK(ps_snapshot_digest(b, db) == 0);
    return memcmp(da, db, 16) == 0;
}

/* The snapshot's bytes equal `expect` (len bytes). */
static void check_snapshot_bytes(const ps_snapshot *s, const unsigned char *expect, size_t len) {
    unsigned char *buf = malloc(len);
    CHECK(buf != NULL);
    CHECK(ps_snapshot_len(s) == len);
    CHECK(ps_snapshot_read(s, 0, buf, len) == 0);
    CHECK(memcmp(buf, expect, len) == 0);
    free(buf);
}

static void round_trip(ps_store *store, int tracking) {
    size_t page = ps_page_size();
    size_t len = 64 * page + 1; /* rounded up to 65 pages */
    ps_region *r = ps_region_new(store, len, tracking);
    CHECK(r != NULL);
    CHECK(ps_region_len(r) == 65 * page);
    len = ps_region_len(r);
    int used = ps_region_tracking(r);
    CHECK(used >= PS_TRACKING_UFFD_WP && used <= PS_TRACKING_COMPARE);
    if (tracking != PS_TRACKING_AUTO) CHECK(used == tracking);
    printf("  backend %s (asked %s)\n", ps_tracking_name(used), ps_tracking_name(tracking));

    unsigned char *mem = ps_region_ptr(r);
    CHECK(mem != NULL);
    unsigned char *model = calloc(1, len);
    CHECK(model != NULL);

    ps_snapshot *zero = ps_snapshot_take(r);
    CHECK(zero != NULL);
    check_snapshot_bytes(zero, model, len);

    memcpy(mem, "first state", 11);
    mem[40 * page + 7] = 0xAB;
    memcpy(model, "first state", 11);
    model[40 * page + 7] = 0xAB;
    ps_snapshot *first = ps_snapshot_take(r);
    CHECK(first != NULL);
    CHECK_NO_ERROR();
    check_snapshot_bytes(first, model, len);
    unsigned char *first_model = malloc(len);
    CHECK(first_model != NULL);
    memcpy(first_model, model, len);

    memcpy(mem, "later state", 11);
    memset(mem + 10 * page, 0x5A, 3 * page);
    mem[len - 1] = 1;
    memcpy(model, "later state", 11);
    memset(model + 10 * page, 0x5A, 3 * page);
    model[len - 1] = 1;
    ps_snapshot *later = ps_snapshot_take(r);
    CHECK(later != NULL);
    check_snapshot_bytes(later, model, len);
    CHECK(!same_digest(first, later));

    /* restore back and forth, with unsnapshotted writes in between */
    mem[20 * page] = 9;
    CHECK(ps_restore(r, first) == 0);
    CHECK(memcmp(mem, first_model, len) == 0);
    mem[30 * page] = 3;
    CHECK(ps_restore(r, later) == 0);
    CHECK(memcmp(mem, model, len) == 0);
    CHECK(ps_restore(r, zero) == 0);
    for (size_t i = 0; i < len; i++) CHECK(mem[i] == 0);
    CHECK(ps_restore(r, first) == 0);
    CHECK(memcmp(mem, first_model, len) == 0);

    /* a snapshot right after a restore has the restored snapshot's digest */
    ps_snapshot *again = ps_snapshot_take(r);
    CHECK(again != NULL);
    CHECK(same_digest(again, first));

    /* restore into another region of the same length; snapshots outlive regions */
    ps_region *r2 = ps_region_new(store, len, PS_TRACKING_AUTO);
    CHECK(r2 != NULL);
    CHECK(ps_restore(r2, later) == 0);
    CHECK(memcmp(ps_region_ptr(r2), model, len) == 0);
    CHECK(ps_region_free(r2) == 0);
    CHECK(ps_region_free(r) == 0);
    check_snapshot_bytes(later, model, len);
    check_snapshot_bytes(first, first_model, len);

    /* partial reads across a page boundary */
    unsigned char two[2];
    CHECK(ps_snapshot_read(later, 10 * page - 1, two, 2) == 0);
    CHECK(two[0] == 0 && two[1] == 0x5A);
    CHECK(ps_snapshot_read(later, len, NULL, 0) == 0);

    CHECK(ps_snapshot_free(zero) == 0);
    CHECK(ps_snapshot_free(first) == 0);
    CHECK(ps_snapshot_free(later) == 0);
    CHECK(ps_snapshot_free(again) == 0);
    free(model);
    free(first_model);
}

static void dedup_and_stats(void) {
    size_t page = ps_page_size();
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    ps_stats st;
    CHECK(ps_store_stats(store, &st) == 0);
    CHECK(st.unique_pages == 0 && st.page_size == page);

    ps_region *a = ps_region_new(store, 16 * page, PS_TRACKING_AUTO);
    ps_region *b = ps_region_new(store, 16 * page, PS_TRACKING_AUTO);
    CHECK(a != NULL && b != NULL);
    memset(ps_region_ptr(a), 7, 2 * page);          /* two equal pages */
    memset(ps_region_ptr(b), 7, page);              /* the same page again */
    memset((char *)ps_region_ptr(b) + page, 8, page); /* a new one */
    ps_snapshot *sa = ps_snapshot_take(a);
    ps_snapshot *sb = ps_snapshot_take(b);
    CHECK(sa != NULL && sb != NULL);
    CHECK(ps_store_stats(store, &st) == 0);
    CHECK(st.unique_pages == 2);
    CHECK(st.stored_bytes == 2 * page);

    /* the store handle can go first: regions and snapshots keep the pages */
    CHECK(ps_store_free(store) == 0);
    CHECK(ps_restore(a, sb) == 0);
    CHECK(((unsigned char *)ps_region_ptr(a))[page] == 8);
    CHECK(ps_snapshot_free(sa) == 0);
    CHECK(ps_snapshot_free(sb) == 0);
    CHECK(ps_region_free(a) == 0);
    CHECK(ps_region_free(b) == 0);
}

int main(void) {
    printf("pagesnap %s, page size %zu, auto picks %s\n", ps_version(), ps_page_size(),
           ps_tracking_name(ps_tracking_auto()));
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    for (size_t i = 0; i < sizeof BACKENDS / sizeof BACKENDS[0]; i++) {
        int t = BACKENDS[i];
        int avail = ps_tracking_available(t);
        CHECK(avail == 0 || avail == 1);
        if (!avail) {
            /* the message is valid until the next ps_* call: print it before another */
            printf("  backend %d unavailable here: %s\n", t, ps_last_error());
            CHECK_ERROR("unavailable");
            /* asking for it explicitly is an error, not a silent fallback */
            CHECK(ps_region_new(store, 4096, t) == NULL);
            CHECK_ERROR("unavailable");
            continue;
        }
        round_trip(store, t);
    }
    CHECK(ps_tracking_available(PS_TRACKING_COMPARE) == 1);
    CHECK(ps_store_free(store) == 0);
    dedup_and_stats();
    DONE();
}
