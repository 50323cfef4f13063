/* Background snapshots through the C API: writer threads keep writing while the
 * snapshot is copied; the snapshot holds the state at the instant it started, and
 * the next ordinary snapshot sees every write. Plus the error paths. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

#define WRITERS 2
#define MIB 8

static uint64_t *words;
static size_t nwords;

static void *writer(void *arg) {
    size_t tid = (size_t)(uintptr_t)arg;
    for (size_t i = tid; i < nwords; i += WRITERS) words[i] = tid + 1;
    return NULL;
}

/* With `reserve`, the store reserves memory for the region first, which the
 * snapshot's writers and copier then stage into. */
static void run(int tracking, int reserve) {
    size_t len = (size_t)MIB << 20;
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    if (reserve) CHECK(ps_store_reserve(store, len) == 0);
    ps_region *r = ps_region_new(store, len, tracking);
    CHECK(r != NULL);
    printf("  %s tracking%s\n", ps_tracking_name(ps_region_tracking(r)),
           reserve ? ", store reserved" : "");
    words = ps_region_ptr(r);
    nwords = len / sizeof *words;
    for (size_t i = 0; i < nwords; i++) words[i] = 123;

    ps_background *bg = ps_background_snapshot(r);
    CHECK(bg != NULL);
    CHECK_NO_ERROR();

    pthread_t threads[WRITERS];
    for (size_t t = 0; t < WRITERS; t++)
        CHECK(pthread_create(&threads[t], NULL, writer, (void *)(uintptr_t)t) == 0);
    int done = ps_background_done(bg);
    CHECK(done == 0 || done == 1);
    ps_snapshot *snap = ps_background_wait(bg);
    CHECK(snap != NULL);
    for (size_t t = 0; t < WRITERS; t++) CHECK(pthread_join(threads[t], NULL) == 0);

    /* the background snapshot: all 123, whatever the writers did meanwhile */
    uint64_t *copy = malloc(len);
    CHECK(copy != NULL);
    CHECK(ps_snapshot_read(snap, 0, copy, len) == 0);
    for (size_t i = 0; i < nwords; i++) CHECK(copy[i] == 123);

    /* the next snapshot sees every write */
    ps_snapshot *after = ps_snapshot_take(r);
    CHECK(after != NULL);
    CHECK(ps_snapshot_read(after, 0, copy, len) == 0);
    for (size_t i = 0; i < nwords; i++) CHECK(copy[i] == i % WRITERS + 1);

    /* restoring the background snapshot brings the old state back */
    CHECK(ps_restore(r, snap) == 0);
    for (size_t i = 0; i < nwords; i++) CHECK(words[i] == 123);

    /* the handle is gone after wait */
    CHECK(ps_background_wait(bg) == NULL);
    CHECK_ERROR("is not a live ps_background handle");
    CHECK(ps_background_done(bg) == -1);
    CHECK(ps_background_free(bg) == -1);

    /* a background save beside writers: the file holds the region as it was */
    for (size_t i = 0; i < nwords; i++) words[i] = 123;
    char path[64];
    snprintf(path, sizeof path, "/tmp/ps-bgsave-%d.snap", (int)getpid());
    for (size_t t = 0; t < WRITERS; t++)
        CHECK(pthread_create(&threads[t], NULL, writer, (void *)(uintptr_t)t) == 0);
    CHECK(ps_background_save(r, path) == 0);
    for (size_t t = 0; t < WRITERS; t++) CHECK(pthread_join(threads[t], NULL) == 0);
    ps_snapshot *saved = ps_snapshot_load(store, path);
    CHECK(saved != NULL);
    CHECK(ps_snapshot_read(saved, 0, copy, len) == 0);
    for (size_t i = 0; i < nwords; i++) CHECK(copy[i] == 123 || copy[i] == i % WRITERS + 1);
    CHECK(ps_snapshot_free(saved) == 0);
    unlink(path);
    /* an unwritable path fails cleanly; writers are not left blocked */
    CHECK(ps_background_save(r, "/nonexistent-dir/x.snap") == -1);
    CHECK_ERROR("/nonexistent-dir/x.snap");
    words[0] = 9;
    CHECK(ps_background_save(r, NULL) == -1);
    CHECK_ERROR("path (const char *) is NULL");

    /* abandoning one: no writer stays blocked, the region works on */
    ps_background *dropped = ps_background_snapshot(r);
    CHECK(dropped != NULL);
    words[0] = 5;
    CHECK(ps_background_free(dropped) == 0);
    ps_snapshot *last = ps_snapshot_take(r);
    CHECK(last != NULL);
    CHECK(ps_snapshot_read(last, 0, copy, 8) == 0 && copy[0] == 5);

    free(copy);
    CHECK(ps_snapshot_free(last) == 0);
    CHECK(ps_snapshot_free(after) == 0);
    CHECK(ps_snapshot_free(snap) == 0);
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_store_free(store) == 0);
}

int main(void) {
    alarm(60); /* a writer parked forever fails the test instead of hanging it */
    CHECK(ps_background_snapshot(NULL) == NULL);
    CHECK_ERROR("region (ps_region *) is NULL");
    CHECK(ps_background_wait(NULL) == NULL);
    CHECK_ERROR("bg (ps_background *) is NULL");
    CHECK(ps_background_done(NULL) == -1);
    CHECK_ERROR("bg (ps_background *) is NULL");
    CHECK(ps_background_free(NULL) == 0);

    run(PS_TRACKING_AUTO, 0);
    run(PS_TRACKING_AUTO, 1);
    if (ps_tracking_available(PS_TRACKING_MPROTECT) == 1) run(PS_TRACKING_MPROTECT, 0);
    run(PS_TRACKING_COMPARE, 0);
    DONE();
}
