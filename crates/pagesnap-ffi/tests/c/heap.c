/* The C heap: ps_heap_* on every tracking backend this machine offers. The
 * allocator's state, statistics and roots live in the region, so ps_restore()
 * rolls them back with the data; pthreads allocate at once. */
#include <pthread.h>
#include <stdint.h>

#include "check.h"

static const int BACKENDS[] = {PS_TRACKING_UFFD_WP, PS_TRACKING_SOFT_DIRTY,
                               PS_TRACKING_MPROTECT, PS_TRACKING_COMPARE};

struct list {
    struct list *next;
    int value;
};

static ps_heap_usage usage(ps_region *r) {
    ps_heap_usage u;
    CHECK(ps_heap_stats(r, &u) == 0);
    return u;
}

static void basics(ps_store *store, int tracking) {
    size_t len = 4u << 20;
    ps_region *r = ps_region_new(store, len, tracking);
    CHECK(r != NULL);
    char *base = ps_region_ptr(r);

    /* no heap yet */
    CHECK(ps_heap_alloc(r, 8) == NULL);
    CHECK_ERROR("ps_heap_init");
    CHECK(ps_heap_init(r) == 0);
    ps_heap_usage u = usage(r);
    CHECK(u.in_use_bytes == 0 && u.allocations == 0 && u.free_bytes > len / 2);

    /* alignment, placement, zeroing, usable size */
    for (size_t n = 0; n < 100; n++) {
        char *p = ps_heap_alloc(r, n * 37);
        CHECK(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(p > base && p + n * 37 <= base + len);
        CHECK(ps_heap_usable_size(r, p) >= n * 37);
        memset(p, 0xAB, n * 37);
        ps_heap_free(r, p);
        CHECK_NO_ERROR();
    }
    unsigned *z = ps_heap_calloc(r, 1000, sizeof(unsigned));
    CHECK(z != NULL);
    for (int i = 0; i < 1000; i++) CHECK(z[i] == 0);
    CHECK(ps_heap_calloc(r, SIZE_MAX / 2, 4) == NULL);
    CHECK_ERROR("overflows");

    /* realloc keeps contents, grows and shrinks */
    char *s = ps_heap_alloc(r, 10);
    memcpy(s, "0123456789", 10);
    s = ps_heap_realloc(r, s, 100000);
    CHECK(s != NULL && memcmp(s, "0123456789", 10) == 0);
    s = ps_heap_realloc(r, s, 5);
    CHECK(s != NULL && memcmp(s, "01234", 5) == 0);
    /* sizes at the top of size_t fail, leaving the block as it was */
    ps_heap_usage held = usage(r);
    for (size_t back = 0; back <= 64; back++) {
        CHECK(ps_heap_realloc(r, s, SIZE_MAX - back) == NULL);
        CHECK(ps_last_error_code() != PS_OK);
    }
    CHECK(ps_heap_usable_size(r, s) >= 5 && memcmp(s, "01234", 5) == 0);
    CHECK(usage(r).in_use_bytes == held.in_use_bytes);
    CHECK(ps_heap_alloc(r, SIZE_MAX - 15) == NULL);
    CHECK(ps_heap_realloc(r, s, 0) == NULL);
    CHECK_NO_ERROR();

    /* bad pointers are refused, the heap unchanged */
    u = usage(r);
    ps_heap_free(r, s); /* freed already by realloc(.., 0) */
    CHECK_ERROR("not a live block");
    int local;
    ps_heap_free(r, &local);
    CHECK_ERROR("not a live block");
    CHECK(ps_heap_usable_size(r, base + 4096 + 3) == 0);
    CHECK(ps_heap_realloc(r, &local, 10) == NULL);
    CHECK(usage(r).in_use_bytes == u.in_use_bytes);
    ps_heap_free(r, NULL);
    CHECK_NO_ERROR();
    ps_heap_free(r, z);
    CHECK_NO_ERROR();

    /* full: NULL, then the heap still works */
    CHECK(ps_heap_alloc(r, len) == NULL);
    CHECK_ERROR("heap is full");
    CHECK(ps_heap_alloc(r, 64) != NULL);

    /* roots */
    CHECK(ps_heap_set_root(r, 16, NULL) == -1);
    CHECK_ERROR("slot 16");
    CHECK(ps_heap_set_root(r, 0, &local) == -1);
    CHECK_ERROR("point into the region");
    CHECK(ps_heap_root(r, 3) == NULL);
    CHECK_NO_ERROR();

    /* a list, a snapshot, changes, a restore: data, allocator, stats and roots
     * roll back together */
    struct list *head = NULL;
    for (int i = 0; i < 1000; i++) {
        struct list *n = ps_heap_alloc(r, sizeof *n);
        CHECK(n != NULL);
        n->value = i;
        n->next = head;
        head = n;
    }
    CHECK(ps_heap_set_root(r, 3, head) == 0);
    ps_heap_usage before = usage(r);
    ps_snapshot *snap = ps_snapshot_take(r);
    CHECK(snap != NULL);
    void *next_addr = ps_heap_alloc(r, 48);
    CHECK(next_addr != NULL);
    for (struct list *n = head->next; n != NULL;) {
        struct list *next = n->next;
        ps_heap_free(r, n);
        n = next;
    }
    head->next = NULL;
    CHECK(ps_heap_set_root(r, 3, NULL) == 0);
    for (int i = 0; i < 200; i++) CHECK(ps_heap_alloc(r, 1000) != NULL);
    CHECK(usage(r).peak_bytes > before.peak_bytes);
    ps_op_stats op;
    ps_snapshot *changed = ps_snapshot_take(r);
    CHECK(ps_region_last_op(r, &op) == 0);
    CHECK(op.op == 1 && op.changed_pages > 0 && op.new_stored_pages > 0);
    ps_snapshot *same = ps_snapshot_take(r); /* nothing written since */
    CHECK(ps_region_last_op(r, &op) == 0);
    CHECK(op.op == 1 && op.changed_pages == 0 && op.new_stored_pages == 0);
    CHECK(ps_restore(r, snap) == 0);
    CHECK(ps_region_last_op(r, &op) == 0);
    CHECK(op.op == 2 && op.changed_pages > 0);
    /* what it wrote back: the table differences and the page written since */
    CHECK(op.written_pages >= op.changed_pages);
    CHECK(ps_restore(r, snap) == 0); /* nothing written since: nothing to do */
    CHECK(ps_region_last_op(r, &op) == 0);
    CHECK(op.op == 2 && op.changed_pages == 0 && op.written_pages == 0);
    CHECK(ps_region_last_op(r, NULL) == -1);
    CHECK(ps_snapshot_free(changed) == 0 && ps_snapshot_free(same) == 0);
    ps_heap_usage after = usage(r);
    CHECK(after.in_use_bytes == before.in_use_bytes);
    CHECK(after.peak_bytes == before.peak_bytes);
    CHECK(after.allocations == before.allocations);
    head = ps_heap_root(r, 3);
    int count = 0, expect = 999;
    for (struct list *n = head; n != NULL; n = n->next, expect--) {
        CHECK(n->value == expect);
        count++;
    }
    CHECK(count == 1000);
    /* the free lists rolled back too: the same allocation lands at the same place */
    CHECK(ps_heap_alloc(r, 48) == next_addr);

    /* a clone elsewhere refuses its heap (its pointers name the original) */
    ps_region *c = ps_snapshot_instantiate(snap, PS_TRACKING_AUTO);
    CHECK(c != NULL);
    CHECK(ps_heap_alloc(c, 8) == NULL);
    CHECK_ERROR("ps_snapshot_instantiate_at");
    CHECK(ps_region_free(c) == 0);

    /* one page is enough for a small heap */
    ps_region *tiny = ps_region_new(store, ps_page_size(), tracking);
    CHECK(tiny != NULL);
    CHECK(ps_heap_init(tiny) == 0);
    CHECK(ps_heap_alloc(tiny, 100) != NULL);
    CHECK(ps_heap_alloc(tiny, ps_page_size()) == NULL);
    CHECK(ps_region_free(tiny) == 0);

    /* letting go of the sync point drains the store once the caller's handles
     * are gone, and the next snapshot is still exact */
    ps_stats st;
    CHECK(ps_snapshot_free(snap) == 0);
    CHECK(ps_store_stats(store, &st) == 0 && st.unique_pages > 0);
    CHECK(ps_region_release_sync_point(r) == 0);
    CHECK(ps_store_stats(store, &st) == 0 && st.unique_pages == 0);
    ps_snapshot *again = ps_snapshot_take(r);
    CHECK(again != NULL);
    CHECK(ps_region_last_op(r, &op) == 0 && op.new_stored_pages > 0);
    head = ps_heap_root(r, 3);
    CHECK(head != NULL && head->value == 999);
    CHECK(ps_restore(r, again) == 0);
    CHECK(ps_heap_root(r, 3) == head && head->value == 999);
    CHECK(ps_snapshot_free(again) == 0);
    CHECK(ps_region_release_sync_point(NULL) == -1);
    CHECK_ERROR("ps_region");
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_heap_alloc(r, 1) == NULL);
    CHECK_ERROR("not a live ps_region");
}

#define THREADS 4
#define ROUNDS 20000

static void *churn(void *arg) {
    ps_region *r = arg;
    void *live[64] = {0};
    unsigned seed = (unsigned)(uintptr_t)&live;
    for (int i = 0; i < ROUNDS; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % 64;
        if (live[k] != NULL) {
            unsigned char *p = live[k];
            if (p[0] != (unsigned char)k) return (void *)1; /* another thread wrote it */
            ps_heap_free(r, p);
            live[k] = NULL;
        } else {
            size_t n = 1 + (seed >> 16) % 2000;
            unsigned char *p = ps_heap_alloc(r, n);
            if (p == NULL) return (void *)2;
            memset(p, (int)k, n);
            live[k] = p;
        }
    }
    for (int k = 0; k < 64; k++) ps_heap_free(r, live[k]);
    return NULL;
}

static void threads(ps_store *store) {
    ps_region *r = ps_region_new(store, 64u << 20, PS_TRACKING_AUTO);
    CHECK(r != NULL);
    CHECK(ps_heap_init(r) == 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], NULL, churn, r) == 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        CHECK(pthread_join(t[i], &ret) == 0);
        CHECK(ret == NULL);
    }
    ps_heap_usage u = usage(r);
    CHECK(u.in_use_bytes == 0 && u.allocations == 0 && u.peak_bytes > 0);
    CHECK(ps_region_free(r) == 0);
}

int main(void) {
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    int ran = 0;
    for (size_t i = 0; i < sizeof BACKENDS / sizeof BACKENDS[0]; i++) {
        if (ps_tracking_available(BACKENDS[i]) != 1) {
            printf("skip %s: not available here\n", ps_tracking_name(BACKENDS[i]));
            continue;
        }
        basics(store, BACKENDS[i]);
        ran++;
    }
    CHECK(ran > 0);
    threads(store);
    CHECK(ps_store_free(store) == 0);
    DONE();
}
