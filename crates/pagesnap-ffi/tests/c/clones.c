/* Clones through the C API: ps_snapshot_instantiate() and ps_region_reset(), on
 * every tracking backend this machine offers. */
#include <stdint.h>

#include "check.h"

static const int BACKENDS[] = {PS_TRACKING_UFFD_WP, PS_TRACKING_SOFT_DIRTY,
                               PS_TRACKING_MPROTECT, PS_TRACKING_COMPARE};

static void clones(ps_store *store, int tracking) {
    size_t page = ps_page_size();
    size_t len = 100 * page;
    ps_region *src = ps_region_new(store, len, tracking);
    CHECK(src != NULL);
    unsigned char *mem = ps_region_ptr(src);
    for (size_t i = 0; i < len; i++) mem[i] = (unsigned char)(i * 7 + i / page);
    memset(mem + 50 * page, 0, 10 * page); /* zero pages: holes in the image */
    ps_snapshot *snap = ps_snapshot_take(src);
    CHECK(snap != NULL);
    unsigned char *model = malloc(len);
    CHECK(model != NULL);
    memcpy(model, mem, len);

    ps_region *a = ps_snapshot_instantiate(snap, tracking);
    CHECK(a != NULL);
    CHECK_NO_ERROR();
    ps_region *b = ps_snapshot_instantiate(snap, PS_TRACKING_AUTO);
    CHECK(b != NULL);
    CHECK(ps_region_len(a) == len);
    CHECK(ps_region_tracking(a) == tracking);
    unsigned char *ma = ps_region_ptr(a), *mb = ps_region_ptr(b);
    CHECK(memcmp(ma, model, len) == 0);

    /* writes in a reach neither b, nor the source, nor the snapshot */
    ma[3 * page] ^= 0xFF;
    ma[55 * page + 1] = 9;
    CHECK(memcmp(mb, model, len) == 0);
    CHECK(memcmp(mem, model, len) == 0);
    unsigned char byte;
    CHECK(ps_snapshot_read(snap, 55 * page + 1, &byte, 1) == 0 && byte == 0);

    /* a clone snapshots and restores like any region */
    ps_snapshot *sa = ps_snapshot_take(a);
    CHECK(sa != NULL);
    CHECK(ps_snapshot_read(sa, 55 * page + 1, &byte, 1) == 0 && byte == 9);
    ma[7 * page] = 1;
    CHECK(ps_restore(a, sa) == 0);
    CHECK(ma[7 * page] == model[7 * page]);

    /* reset: back to the snapshot it came from, and tracking stays exact */
    CHECK(ps_region_reset(a) == 0);
    CHECK(memcmp(ma, model, len) == 0);
    ma[99 * page] = 42;
    ps_snapshot *after = ps_snapshot_take(a);
    CHECK(ps_snapshot_read(after, 99 * page, &byte, 1) == 0 && byte == 42);

    /* a clone outlives its source region and its snapshot handle */
    CHECK(ps_region_free(src) == 0);
    CHECK(ps_snapshot_free(snap) == 0);
    CHECK(ps_region_reset(a) == 0);
    CHECK(memcmp(ma, model, len) == 0);
    CHECK(memcmp(mb, model, len) == 0);

    /* reset of a region that is no clone is an error */
    ps_region *plain = ps_region_new(store, page, tracking);
    CHECK(plain != NULL);
    CHECK(ps_region_reset(plain) == -1);
    CHECK_ERROR("ps_region_reset() needs a clone");
    CHECK(ps_last_error_code() == PS_ERR_NOT_A_CLONE);
    CHECK(ps_snapshot_instantiate(NULL, tracking) == NULL);
    CHECK_ERROR("snap");

    CHECK(ps_snapshot_free(sa) == 0);
    CHECK(ps_snapshot_free(after) == 0);
    CHECK(ps_region_free(plain) == 0);
    CHECK(ps_region_free(a) == 0);
    CHECK(ps_region_free(b) == 0);
    free(model);
    printf("  clones on %s: ok\n", ps_tracking_name(tracking));
}

int main(void) {
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    for (size_t i = 0; i < sizeof BACKENDS / sizeof BACKENDS[0]; i++) {
        if (ps_tracking_available(BACKENDS[i]) != 1) {
            printf("  backend %d unavailable here: %s\n", BACKENDS[i], ps_last_error());
            continue;
        }
        clones(store, BACKENDS[i]);
    }
    CHECK(ps_store_free(store) == 0);
    DONE();
}
