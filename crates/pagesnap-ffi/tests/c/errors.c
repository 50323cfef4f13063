/* Every error path of the C API: each failing call returns its documented failure
 * value and leaves a message in ps_last_error(); nothing crashes. */
#include <stdint.h>

#include "check.h"

static void null_handles(void) {
    uint8_t digest[16];
    ps_stats st;
    char buf[8];

    CHECK(ps_region_new(NULL, 4096, PS_TRACKING_AUTO) == NULL);
    CHECK_ERROR("store (ps_store *) is NULL");
    CHECK(ps_last_error_code() == PS_ERR_NULL);
    CHECK(ps_region_ptr(NULL) == NULL);
    CHECK_ERROR("region (ps_region *) is NULL");
    CHECK(ps_region_len(NULL) == 0);
    CHECK_ERROR("is NULL");
    CHECK(ps_region_tracking(NULL) == -1);
    CHECK_ERROR("is NULL");
    CHECK(ps_snapshot_take(NULL) == NULL);
    CHECK_ERROR("region (ps_region *) is NULL");
    CHECK(ps_restore(NULL, NULL) == -1);
    CHECK_ERROR("is NULL");
    CHECK(ps_snapshot_digest(NULL, digest) == -1);
    CHECK_ERROR("snap (ps_snapshot *) is NULL");
    CHECK(ps_snapshot_len(NULL) == 0);
    CHECK_ERROR("is NULL");
    CHECK(ps_snapshot_read(NULL, 0, buf, 1) == -1);
    CHECK_ERROR("is NULL");
    CHECK(ps_store_stats(NULL, &st) == -1);
    CHECK_ERROR("store (ps_store *) is NULL");
    CHECK(ps_store_reserve(NULL, 4096) == -1);
    CHECK_ERROR("store (ps_store *) is NULL");

    /* free(NULL) convention: a no-op that succeeds */
    CHECK(ps_store_free(NULL) == 0);
    CHECK_NO_ERROR();
    CHECK(ps_region_free(NULL) == 0);
    CHECK(ps_snapshot_free(NULL) == 0);
}

static void null_out_pointers(ps_store *store, ps_region *r, ps_snapshot *s) {
    CHECK(ps_restore(r, NULL) == -1);
    CHECK_ERROR("snap (ps_snapshot *) is NULL");
    CHECK(ps_snapshot_digest(s, NULL) == -1);
    CHECK_ERROR("out (uint8_t[16]) is NULL");
    CHECK(ps_store_stats(store, NULL) == -1);
    CHECK_ERROR("out (ps_stats *) is NULL");
    CHECK(ps_snapshot_read(s, 0, NULL, 1) == -1);
    CHECK_ERROR("buf (void *) is NULL");
}

static void bad_arguments(ps_store *store, ps_region *r, ps_snapshot *s) {
    size_t page = ps_page_size();
    char buf[16];

    /* bad tracking constants */
    CHECK(ps_region_new(store, 4096, 5) == NULL);
    CHECK_ERROR("tracking 5 is not one of PS_TRACKING_AUTO");
    CHECK(ps_last_error_code() == PS_ERR_ARGUMENT);
    CHECK(ps_region_new(store, 4096, -1) == NULL);
    CHECK_ERROR("tracking -1 is not one of");
    CHECK(ps_tracking_name(42) == NULL);
    CHECK_ERROR("tracking 42");
    CHECK(ps_tracking_available(-7) == -1);
    CHECK_ERROR("tracking -7");

    /* zero and absurd lengths */
    CHECK(ps_region_new(store, 0, PS_TRACKING_AUTO) == NULL);
    CHECK_ERROR("at least one page");
    CHECK(ps_region_new(store, SIZE_MAX, PS_TRACKING_AUTO) == NULL);
    CHECK_ERROR("overflows");

    /* restore of a snapshot of another length leaves the region alone */
    ps_region *small = ps_region_new(store, page, PS_TRACKING_AUTO);
    CHECK(small != NULL);
    memset(ps_region_ptr(small), 1, page);
    CHECK(ps_restore(small, s) == -1);
    CHECK_ERROR("cannot restore a snapshot of");
    CHECK(ps_last_error_code() == PS_ERR_ARGUMENT);
    CHECK(((unsigned char *)ps_region_ptr(small))[page - 1] == 1);
    ps_snapshot *small_snap = ps_snapshot_take(small);
    CHECK(small_snap != NULL);
    CHECK(ps_restore(r, small_snap) == -1);
    CHECK_ERROR("into a region of");
    CHECK(ps_snapshot_free(small_snap) == 0);
    CHECK(ps_region_free(small) == 0);

    /* reads past the end, and offsets that overflow */
    size_t len = ps_snapshot_len(s);
    CHECK(ps_snapshot_read(s, len - 8, buf, 16) == -1);
    CHECK_ERROR("outside the snapshot");
    CHECK(ps_snapshot_read(s, SIZE_MAX, buf, 2) == -1);
    CHECK_ERROR("outside the snapshot");
    CHECK(ps_snapshot_read(s, len + 1, NULL, 0) == -1);
    CHECK_ERROR("outside the snapshot");
    CHECK(ps_snapshot_read(s, len - 16, buf, 16) == 0);
    CHECK_NO_ERROR();
}

static void stale_and_foreign_handles(ps_store *store) {
    uint8_t digest[16];
    ps_region *r = ps_region_new(store, 4096, PS_TRACKING_AUTO);
    CHECK(r != NULL);
    ps_snapshot *s = ps_snapshot_take(r);
    CHECK(s != NULL);

    /* a handle of the wrong type */
    CHECK(ps_snapshot_digest((ps_snapshot *)r, digest) == -1);
    CHECK_ERROR("is not a live ps_snapshot handle");
    CHECK(ps_last_error_code() == PS_ERR_HANDLE);
    CHECK(ps_region_len((ps_region *)s) == 0);
    CHECK_ERROR("is not a live ps_region handle");
    CHECK(ps_region_free((ps_region *)store) == -1);
    CHECK_ERROR("is not a live ps_region handle");
    CHECK(ps_region_len(r) == 4096 || ps_region_len(r) == ps_page_size()); /* r survived */

    /* pointers pagesnap never returned */
    int on_stack;
    CHECK(ps_region_ptr((ps_region *)&on_stack) == NULL);
    CHECK_ERROR("is not a live ps_region handle");
    CHECK(ps_snapshot_free((ps_snapshot *)(uintptr_t)0x1) == -1);
    CHECK_ERROR("is not a live ps_snapshot handle");

    /* freed handles, double frees */
    CHECK(ps_snapshot_free(s) == 0);
    CHECK(ps_snapshot_free(s) == -1);
    CHECK_ERROR("is not a live ps_snapshot handle");
    CHECK(ps_snapshot_digest(s, digest) == -1);
    CHECK_ERROR("freed already");
    CHECK(ps_restore(r, s) == -1);
    CHECK_ERROR("is not a live ps_snapshot handle");
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_region_free(r) == -1);
    CHECK_ERROR("is not a live ps_region handle");
    CHECK(ps_snapshot_take(r) == NULL);
    CHECK_ERROR("is not a live ps_region handle");
    CHECK(ps_region_ptr(r) == NULL);
    CHECK(ps_region_tracking(r) == -1);

    ps_store *gone = ps_store_new();
    CHECK(gone != NULL);
    CHECK(ps_store_free(gone) == 0);
    CHECK(ps_region_new(gone, 4096, PS_TRACKING_AUTO) == NULL);
    CHECK_ERROR("is not a live ps_store handle");
    CHECK(ps_store_free(gone) == -1);
}

static void messages(void) {
    /* a success clears the message; the message is never NULL */
    CHECK(ps_tracking_name(99) == NULL);
    const char *m = ps_last_error();
    CHECK(m != NULL && m[0] != '\0');
    CHECK(strcmp(ps_tracking_name(PS_TRACKING_COMPARE), "compare") == 0);
    CHECK_NO_ERROR();
    CHECK(strcmp(ps_tracking_name(PS_TRACKING_AUTO), "auto") == 0);
    CHECK(strcmp(ps_tracking_name(PS_TRACKING_UFFD_WP), "uffd-wp") == 0);
    CHECK(strcmp(ps_tracking_name(PS_TRACKING_SOFT_DIRTY), "soft-dirty") == 0);
    CHECK(strcmp(ps_tracking_name(PS_TRACKING_MPROTECT), "mprotect") == 0);
    CHECK(ps_version() != NULL && ps_version()[0] != '\0');
}

int main(void) {
    null_handles();
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    ps_region *r = ps_region_new(store, 8 * ps_page_size(), PS_TRACKING_AUTO);
    CHECK(r != NULL);
    ps_snapshot *s = ps_snapshot_take(r);
    CHECK(s != NULL);
    null_out_pointers(store, r, s);
    bad_arguments(store, r, s);
    stale_and_foreign_handles(store);
    messages();
    CHECK(ps_snapshot_free(s) == 0);
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_store_free(store) == 0);
    CHECK(ps_page_size() > 0);
    CHECK(ps_last_error_code() == PS_OK);
    DONE();
}
