/* Snapshot files through the C API: save / load and their delta forms, and the
 * errors of each. argv[1] is a scratch directory. */
#include <stdint.h>

#include "check.h"

static char dir[512];

static const char *in_dir(const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void digest_of(const ps_snapshot *s, uint8_t out[16]) { CHECK(ps_snapshot_digest(s, out) == 0); }

int main(int argc, char **argv) {
    CHECK(argc == 2);
    snprintf(dir, sizeof dir, "%s", argv[1]);
    size_t page = ps_page_size();
    size_t len = 32 * page;

    ps_store *store = ps_store_new();
    ps_region *r = ps_region_new(store, len, PS_TRACKING_AUTO);
    CHECK(store != NULL && r != NULL);
    unsigned char *mem = ps_region_ptr(r);
    memcpy(mem, "saved to disk", 13);
    memset(mem + 5 * page, 0x33, 2 * page);
    ps_snapshot *base = ps_snapshot_take(r);
    CHECK(base != NULL);
    mem[20 * page] = 0x77;
    ps_snapshot *next = ps_snapshot_take(r);
    CHECK(next != NULL);

    /* full file: round trip into another store, then restore from it */
    char full[1024];
    snprintf(full, sizeof full, "%s", in_dir("base.snap"));
    CHECK(ps_snapshot_save(base, full) == 0);
    CHECK_NO_ERROR();
    ps_store *other = ps_store_new();
    CHECK(other != NULL);
    ps_snapshot *loaded = ps_snapshot_load(other, full);
    CHECK(loaded != NULL);
    uint8_t d1[16], d2[16];
    digest_of(base, d1);
    digest_of(loaded, d2);
    CHECK(memcmp(d1, d2, 16) == 0);
    CHECK(ps_snapshot_len(loaded) == len);
    CHECK(ps_restore(r, loaded) == 0);
    CHECK(memcmp(mem, "saved to disk", 13) == 0 && mem[20 * page] == 0);

    /* delta file: only what changed from the parent */
    char delta[1024];
    snprintf(delta, sizeof delta, "%s", in_dir("next.delta"));
    CHECK(ps_snapshot_save_delta(next, base, delta) == 0);
    ps_snapshot *rebuilt = ps_snapshot_load_delta(loaded, delta);
    CHECK(rebuilt != NULL);
    digest_of(next, d1);
    digest_of(rebuilt, d2);
    CHECK(memcmp(d1, d2, 16) == 0);

    /* errors */
    CHECK(ps_snapshot_save(NULL, full) == -1);
    CHECK_ERROR("snap (ps_snapshot *) is NULL");
    CHECK(ps_snapshot_save(base, NULL) == -1);
    CHECK_ERROR("path (const char *) is NULL");
    CHECK(ps_snapshot_load(NULL, full) == NULL);
    CHECK_ERROR("store (ps_store *) is NULL");
    CHECK(ps_snapshot_load(other, NULL) == NULL);
    CHECK_ERROR("path (const char *) is NULL");
    CHECK(ps_snapshot_load_delta(NULL, delta) == NULL);
    CHECK_ERROR("parent (ps_snapshot *) is NULL");
    CHECK(ps_snapshot_save_delta(next, NULL, delta) == -1);
    CHECK_ERROR("parent (ps_snapshot *) is NULL");
    CHECK(ps_snapshot_save(base, in_dir("no/such/dir/x.snap")) == -1);
    CHECK_ERROR("no/such/dir");
    CHECK(ps_snapshot_load(other, in_dir("missing.snap")) == NULL);
    CHECK_ERROR("missing.snap");

    /* a file that is not a snapshot, and a truncated one */
    FILE *f = fopen(in_dir("garbage.snap"), "wb");
    CHECK(f != NULL);
    for (int i = 0; i < 4096; i++) fputc(i * 7, f);
    fclose(f);
    CHECK(ps_snapshot_load(other, in_dir("garbage.snap")) == NULL);
    CHECK_ERROR("garbage.snap");
    f = fopen(full, "rb");
    CHECK(f != NULL);
    char head[100];
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    CHECK(got == sizeof head);
    f = fopen(in_dir("short.snap"), "wb");
    CHECK(f != NULL && fwrite(head, 1, sizeof head, f) == sizeof head);
    fclose(f);
    CHECK(ps_snapshot_load(other, in_dir("short.snap")) == NULL);
    CHECK_ERROR("short.snap");

    /* a delta loaded on the wrong parent, a full file loaded as a delta */
    CHECK(ps_snapshot_load_delta(next, delta) == NULL);
    CHECK_ERROR("next.delta");
    CHECK(ps_snapshot_load_delta(base, full) == NULL);
    CHECK(ps_snapshot_load(other, delta) == NULL);
    /* a delta against a parent of another length */
    ps_region *small = ps_region_new(store, page, PS_TRACKING_AUTO);
    CHECK(small != NULL);
    ps_snapshot *small_snap = ps_snapshot_take(small);
    CHECK(small_snap != NULL);
    CHECK(ps_snapshot_save_delta(next, small_snap, in_dir("bad.delta")) == -1);
    CHECK(ps_last_error()[0] != '\0');

    CHECK(ps_snapshot_free(small_snap) == 0);
    CHECK(ps_region_free(small) == 0);
    CHECK(ps_snapshot_free(rebuilt) == 0);
    CHECK(ps_snapshot_free(loaded) == 0);
    CHECK(ps_snapshot_free(next) == 0);
    CHECK(ps_snapshot_free(base) == 0);
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_store_free(other) == 0);
    CHECK(ps_store_free(store) == 0);
    DONE();
}
