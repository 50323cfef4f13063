/* Multi-threaded use of the C API with pthreads:
 *  1. writer threads fill a region between snapshots (quiescent at each snapshot,
 *     synchronised with barriers); every snapshot is checked against a model and
 *     restored later, in any order;
 *  2. threads use the API at once: each its own region in one shared store, and
 *     two threads snapshotting one region; error messages stay per thread. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>

#include "check.h"

#define WRITERS 4
#define ROUNDS 12
#define PAGES 512

static unsigned char *mem;
static size_t page;
static pthread_barrier_t start_round, end_round;
static int round_no;

/* Writer `tid` owns pages p with p % WRITERS == tid; in round k it writes the pages
 * with (p / WRITERS + k) % 3 == 0, one byte every 512 bytes, value k*WRITERS+tid+1. */
static void write_round(unsigned char *dst, int tid, int k) {
    for (size_t p = (size_t)tid; p < PAGES; p += WRITERS) {
        if ((p / WRITERS + (size_t)k) % 3 != 0) continue;
        for (size_t off = (size_t)(k % 512); off < page; off += 512)
            dst[p * page + off] = (unsigned char)(k * WRITERS + tid + 1);
    }
}

static void *writer(void *arg) {
    int tid = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&start_round);
        int k = __atomic_load_n(&round_no, __ATOMIC_ACQUIRE);
        if (k < 0) return NULL;
        write_round(mem, tid, k);
        pthread_barrier_wait(&end_round);
    }
}

static void writers_between_snapshots(void) {
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    page = ps_page_size();
    size_t len = PAGES * page;
    ps_region *r = ps_region_new(store, len, PS_TRACKING_AUTO);
    CHECK(r != NULL);
    mem = ps_region_ptr(r);
    printf("  %d writers, %d rounds, %s tracking\n", WRITERS, ROUNDS,
           ps_tracking_name(ps_region_tracking(r)));

    unsigned char *model = calloc(1, len);
    unsigned char *models[ROUNDS];
    ps_snapshot *snaps[ROUNDS];
    unsigned char *buf = malloc(len);
    CHECK(model != NULL && buf != NULL);

    pthread_t threads[WRITERS];
    CHECK(pthread_barrier_init(&start_round, NULL, WRITERS + 1) == 0);
    CHECK(pthread_barrier_init(&end_round, NULL, WRITERS + 1) == 0);
    for (int t = 0; t < WRITERS; t++)
        CHECK(pthread_create(&threads[t], NULL, writer, (void *)(intptr_t)t) == 0);

    for (int k = 0; k < ROUNDS; k++) {
        __atomic_store_n(&round_no, k, __ATOMIC_RELEASE);
        pthread_barrier_wait(&start_round); /* writers run */
        pthread_barrier_wait(&end_round);   /* writers quiescent */
        for (int t = 0; t < WRITERS; t++) write_round(model, t, k);
        snaps[k] = ps_snapshot_take(r);
        CHECK(snaps[k] != NULL);
        models[k] = malloc(len);
        CHECK(models[k] != NULL);
        memcpy(models[k], model, len);
        CHECK(ps_snapshot_read(snaps[k], 0, buf, len) == 0);
        CHECK(memcmp(buf, model, len) == 0);
        CHECK(memcmp(mem, model, len) == 0);
    }
    __atomic_store_n(&round_no, -1, __ATOMIC_RELEASE);
    pthread_barrier_wait(&start_round);
    for (int t = 0; t < WRITERS; t++) CHECK(pthread_join(threads[t], NULL) == 0);

    /* restore in a scrambled order, dirtying pages in between */
    for (int i = 0; i < 2 * ROUNDS; i++) {
        int k = (i * 7 + 3) % ROUNDS;
        mem[(size_t)(i % PAGES) * page] ^= 0xFF;
        CHECK(ps_restore(r, snaps[k]) == 0);
        CHECK(memcmp(mem, models[k], len) == 0);
    }
    for (int k = 0; k < ROUNDS; k++) {
        CHECK(ps_snapshot_free(snaps[k]) == 0);
        free(models[k]);
    }
    pthread_barrier_destroy(&start_round);
    pthread_barrier_destroy(&end_round);
    free(model);
    free(buf);
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_store_free(store) == 0);
}

/* Part 2: threads calling the API at once. */
static ps_store *shared_store;

static void *own_region(void *arg) {
    int tid = (int)(intptr_t)arg;
    size_t len = 64 * page;
    for (int iter = 0; iter < 20; iter++) {
        ps_region *r = ps_region_new(shared_store, len, PS_TRACKING_AUTO);
        CHECK(r != NULL);
        unsigned char *m = ps_region_ptr(r);
        memset(m, tid + 1, len / 2);
        ps_snapshot *a = ps_snapshot_take(r);
        CHECK(a != NULL);
        memset(m, 0xEE, len);
        /* an error on this thread ... */
        CHECK(ps_tracking_name(100 + tid) == NULL);
        CHECK_ERROR("tracking 1");
        CHECK(ps_restore(r, a) == 0);
        /* ... is cleared by the next success here, whatever other threads do */
        CHECK_NO_ERROR();
        CHECK(m[len / 2 - 1] == (unsigned char)(tid + 1) && m[len / 2] == 0);
        CHECK(ps_snapshot_free(a) == 0);
        CHECK(ps_region_free(r) == 0);
    }
    return NULL;
}

static ps_region *contended;

static void *snapshot_shared_region(void *arg) {
    uint8_t *digest = arg;
    for (int i = 0; i < 50; i++) {
        ps_snapshot *s = ps_snapshot_take(contended);
        CHECK(s != NULL);
        CHECK(ps_snapshot_digest(s, digest) == 0);
        CHECK(ps_snapshot_free(s) == 0);
    }
    return NULL;
}

static void concurrent_calls(void) {
    shared_store = ps_store_new();
    CHECK(shared_store != NULL);
    pthread_t threads[WRITERS];
    for (int t = 0; t < WRITERS; t++)
        CHECK(pthread_create(&threads[t], NULL, own_region, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < WRITERS; t++) CHECK(pthread_join(threads[t], NULL) == 0);
    ps_stats st;
    CHECK(ps_store_stats(shared_store, &st) == 0);
    CHECK(st.unique_pages == 0); /* every snapshot was freed */

    contended = ps_region_new(shared_store, 32 * page, PS_TRACKING_AUTO);
    CHECK(contended != NULL);
    memset(ps_region_ptr(contended), 0x42, 5 * page);
    uint8_t digests[2][16];
    pthread_t a, b;
    CHECK(pthread_create(&a, NULL, snapshot_shared_region, digests[0]) == 0);
    CHECK(pthread_create(&b, NULL, snapshot_shared_region, digests[1]) == 0);
    CHECK(pthread_join(a, NULL) == 0);
    CHECK(pthread_join(b, NULL) == 0);
    CHECK(memcmp(digests[0], digests[1], 16) == 0);
    CHECK(ps_region_free(contended) == 0);
    CHECK(ps_store_free(shared_store) == 0);
}

int main(void) {
    writers_between_snapshots();
    concurrent_calls();
    DONE();
}
