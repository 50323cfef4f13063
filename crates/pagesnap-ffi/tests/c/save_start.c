/* ps_background_save_start(): returns once the instant has passed, while a
 * writer thread keeps updating a heap; the file holds the state of the instant,
 * whole (the writer's transactions are under a mutex the caller holds across
 * the start). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

struct state {
    long a, b; /* a == b between transactions */
    long items;
    long *log[64];
};

static ps_region *region;
static struct state *st;
static pthread_mutex_t tx = PTHREAD_MUTEX_INITIALIZER;
static atomic_int stop;

static void *writer(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&tx);
        st->a++;
        unsigned k = (unsigned)st->items % 64;
        ps_heap_free(region, st->log[k]);
        st->log[k] = ps_heap_alloc(region, 4096 + (size_t)k * 100);
        if (st->log[k] != NULL) *st->log[k] = st->a;
        st->items++;
        st->b++;
        pthread_mutex_unlock(&tx);
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    char path[4096];
    snprintf(path, sizeof path, "%s/live.snap", argv[1]);
    ps_store *store = ps_store_new();
    region = ps_region_new(store, 64u << 20, PS_TRACKING_AUTO);
    CHECK(region != NULL);
    CHECK(ps_heap_init(region) == 0);
    st = ps_heap_calloc(region, 1, sizeof *st);
    CHECK(st != NULL && ps_heap_set_root(region, 0, st) == 0);
    char *filler = ps_heap_alloc(region, 32u << 20);
    CHECK(filler != NULL);
    memset(filler, 0x3C, 32u << 20);

    pthread_t t;
    CHECK(pthread_create(&t, NULL, writer, NULL) == 0);
    while (__atomic_load_n(&st->items, __ATOMIC_RELAXED) < 1000) sched_yield();

    pthread_mutex_lock(&tx);
    long at_instant = st->a;
    ps_save_job *job = ps_background_save_start(region, path);
    pthread_mutex_unlock(&tx);
    CHECK(job != NULL);
    ps_progress p;
    CHECK(ps_save_job_progress(job, &p) == 0);
    CHECK(p.copied_pages <= p.total_pages);
    while (ps_save_job_done(job) == 0) sched_yield();
    ps_save_report report;
    CHECK(ps_save_job_wait(job, &report) == 0);
    CHECK(report.pages == (64u << 20) / ps_page_size());
    CHECK(report.file_bytes > 0 && report.stored_pages > 0); /* equal filler pages are stored once */
    /* the writer met the save: the time it was held up is counted */
    CHECK(report.writer_waits == 0 || report.writer_wait_ns > 0);
    CHECK(ps_save_job_done(job) == -1);
    atomic_store(&stop, 1);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(st->a > at_instant); /* the writer went on after the instant */

    ps_snapshot *snap = ps_snapshot_load(store, path);
    CHECK(snap != NULL);
    CHECK(ps_snapshot_origin(snap) == ps_region_ptr(region));
    CHECK(ps_restore(region, snap) == 0);
    struct state *back = ps_heap_root(region, 0);
    CHECK(back == st);
    CHECK(back->a == back->b && back->a == at_instant);
    for (int k = 0; k < 64; k++)
        if (back->log[k] != NULL) CHECK(*back->log[k] <= at_instant && ps_heap_usable_size(region, back->log[k]) >= 4096);
    CHECK(filler[12345] == 0x3C);
    ps_heap_usage u;
    CHECK(ps_heap_stats(region, &u) == 0 && u.allocations >= 2);
    CHECK(ps_heap_alloc(region, 100) != NULL);

    CHECK(ps_background_save_start(region, NULL) == NULL);
    CHECK(ps_last_error_code() == PS_ERR_NULL);
    CHECK(ps_snapshot_free(snap) == 0);
    CHECK(ps_region_free(region) == 0);
    CHECK(ps_store_free(store) == 0);
    DONE();
}
