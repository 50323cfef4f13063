/* Background snapshots through the C API as real programs call them: a second
 * start refused while one runs must leave the first exact, and reading a
 * snapshot into memory under a background snapshot must not deadlock. */
#define _GNU_SOURCE
#include <stdint.h>
#include <unistd.h>

#include "check.h"

#define MIB 6
#define ROUNDS 40

static void fill(uint64_t *words, size_t n, uint64_t seed) {
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        words[i] = x;
    }
}

static void refused_second_start(int tracking) {
    size_t len = (size_t)MIB << 20;
    ps_store *store = ps_store_new();
    ps_region *r = ps_region_new(store, len, tracking);
    CHECK(store != NULL && r != NULL);
    uint64_t *words = ps_region_ptr(r);
    size_t n = len / sizeof *words;
    uint64_t *expected = malloc(len), *copy = malloc(len);
    CHECK(expected != NULL && copy != NULL);
    char path[64];
    snprintf(path, sizeof path, "/tmp/ps-rel-%d.snap", (int)getpid());
    for (int round = 0; round < ROUNDS; round++) {
        fill(words, n, (uint64_t)round + 1);
        memcpy(expected, words, len);
        ps_background *bg = ps_background_snapshot(r);
        CHECK(bg != NULL);
        /* refused as busy (unless the first is done already) */
        if (round % 2 == 0) {
            ps_background *second = ps_background_snapshot(r);
            if (second == NULL) {
                CHECK_ERROR("already running");
            } else {
                ps_snapshot *s2 = ps_background_wait(second);
                CHECK(s2 != NULL && ps_snapshot_free(s2) == 0);
            }
        } else if (ps_background_save(r, path) != 0) {
            CHECK_ERROR("already running");
        }
        ps_snapshot *now = ps_snapshot_take(r);
        CHECK(now != NULL);
        ps_snapshot *snap = ps_background_wait(bg);
        CHECK(snap != NULL);
        CHECK(ps_snapshot_read(snap, 0, copy, len) == 0);
        CHECK(memcmp(copy, expected, len) == 0);
        CHECK(ps_snapshot_read(now, 0, copy, len) == 0);
        CHECK(memcmp(copy, expected, len) == 0);
        CHECK(ps_snapshot_free(snap) == 0 && ps_snapshot_free(now) == 0);
    }
    unlink(path);
    free(expected);
    free(copy);
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_store_free(store) == 0);
}

static void read_into_protected_memory(int tracking) {
    size_t len = (size_t)16 << 20;
    ps_store *store = ps_store_new();
    ps_region *r = ps_region_new(store, len, tracking);
    ps_region *other = ps_region_new(store, len, tracking);
    CHECK(store != NULL && r != NULL && other != NULL);
    uint64_t *words = ps_region_ptr(r);
    fill(ps_region_ptr(other), len / 8, 7);
    ps_snapshot *source = ps_snapshot_take(other);
    CHECK(source != NULL);
    memset(words, 1, len);
    ps_background *bg = ps_background_snapshot(r);
    CHECK(bg != NULL);
    /* the last 4 MiB: batches the copier reaches last */
    size_t at = len - ((size_t)4 << 20);
    CHECK(ps_snapshot_read(source, at, (char *)words + at, len - at) == 0);
    ps_snapshot *snap = ps_background_wait(bg);
    CHECK(snap != NULL);
    unsigned char byte = 0;
    CHECK(ps_snapshot_read(snap, len - 1, &byte, 1) == 0 && byte == 1);
    CHECK(memcmp((char *)words + at, (char *)ps_region_ptr(other) + at, len - at) == 0);
    CHECK(ps_snapshot_free(snap) == 0 && ps_snapshot_free(source) == 0);
    CHECK(ps_region_free(r) == 0 && ps_region_free(other) == 0);
    CHECK(ps_store_free(store) == 0);
}

int main(void) {
    alarm(60); /* a deadlock fails the test instead of hanging it */
    int backends[] = {PS_TRACKING_UFFD_WP, PS_TRACKING_MPROTECT, PS_TRACKING_COMPARE};
    for (size_t i = 0; i < sizeof backends / sizeof *backends; i++) {
        if (ps_tracking_available(backends[i]) != 1) {
            printf("  skip %s: unavailable here\n", ps_tracking_name(backends[i]));
            continue;
        }
        printf("  %s tracking\n", ps_tracking_name(backends[i]));
        refused_second_start(backends[i]);
        read_into_protected_memory(backends[i]);
    }
    DONE();
}
