/* Converging snapshots and saves through the C API: a pthread writer that never
 * waits, the finish at a quiescent point equal to the region, calls that need
 * the whole region refused (not blocked) meanwhile, abandoning before finish,
 * and each handle kind refusing the other's finish. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

#define LEN (8u << 20)

static pthread_mutex_t quiet = PTHREAD_MUTEX_INITIALIZER; /* held around each write burst */
static atomic_int stop;

static void *writer(void *arg) {
    uint64_t *words = arg;
    for (uint64_t i = 1; !atomic_load(&stop); i++) {
        pthread_mutex_lock(&quiet);
        for (int k = 0; k < 64; k++) words[(i * 4099 + (uint64_t)k * 512) % (LEN / 8)] = i;
        pthread_mutex_unlock(&quiet);
    }
    return NULL;
}

/* The snapshot's bytes equal the region's. */
static void check_equal(ps_snapshot *s, ps_region *r, char *buf) {
    CHECK(ps_snapshot_read(s, 0, buf, LEN) == 0);
    CHECK(memcmp(buf, ps_region_ptr(r), LEN) == 0);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/converging-c-%d.snap", dir, (int)getpid());
    char *buf = malloc(LEN);
    ps_store *store = ps_store_new();
    ps_region *r = ps_region_new(store, LEN, PS_TRACKING_AUTO);
    CHECK(buf != NULL && store != NULL && r != NULL);
    memset(ps_region_ptr(r), 7, LEN);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, writer, ps_region_ptr(r)) == 0);

    /* into the store, with a writer that never stops */
    for (int cycle = 0; cycle < 3; cycle++) {
        ps_converging *c = ps_converging_start(r, NULL);
        CHECK(c != NULL);
        CHECK(ps_snapshot_take(r) == NULL); /* refused at once, not blocked */
        CHECK(ps_last_error_code() == PS_ERR_BUSY);
        CHECK(ps_background_snapshot(r) == NULL);
        CHECK(ps_converging_start(r, NULL) == NULL);
        CHECK(ps_converging_finish_save(c) == -1);
        CHECK_ERROR("ps_converging_finish()");
        CHECK(ps_converging_hurry(c) == 0);
        CHECK(ps_converging_wait(c, 60000) == 1);
        ps_converge_progress p;
        CHECK(ps_converging_progress(c, &p) == 0 && p.converged == 1);
        pthread_mutex_lock(&quiet);
        ps_snapshot *s = ps_converging_finish(c);
        CHECK(s != NULL);
        check_equal(s, r, buf);
        pthread_mutex_unlock(&quiet);
        CHECK(ps_converging_wait(c, 0) == -1); /* freed by finish */
        CHECK(ps_converging_hurry(c) == -1);
        ps_snapshot_free(s);
    }

    /* a save: the file holds the finish instant */
    ps_converging *c = ps_converging_start(r, path);
    CHECK(c != NULL);
    CHECK(ps_converging_finish(c) == NULL);
    CHECK_ERROR("ps_converging_finish_save()");
    CHECK(ps_converging_wait(c, 60000) == 1);
    pthread_mutex_lock(&quiet);
    CHECK(ps_converging_finish_save(c) == 0);
    memcpy(buf, ps_region_ptr(r), LEN);
    pthread_mutex_unlock(&quiet);
    ps_save_report rep;
    CHECK(ps_converging_save_wait(c, &rep) == 0);
    CHECK(rep.pages == LEN / ps_page_size() && rep.file_bytes > 0);
    ps_snapshot *saved = ps_snapshot_load(store, path);
    CHECK(saved != NULL);
    char *back = malloc(LEN);
    CHECK(back != NULL && ps_snapshot_read(saved, 0, back, LEN) == 0);
    CHECK(memcmp(back, buf, LEN) == 0);
    ps_snapshot_free(saved);
    CHECK(remove(path) == 0);

    /* abandoned: no file, the region free again, nothing lost */
    c = ps_converging_start(r, path);
    CHECK(c != NULL);
    CHECK(ps_converging_free(c) == 0);
    CHECK(access(path, F_OK) != 0);
    CHECK(ps_converging_free(NULL) == 0);
    atomic_store(&stop, 1);
    CHECK(pthread_join(t, NULL) == 0);
    ps_snapshot *s = ps_snapshot_take(r);
    CHECK(s != NULL);
    check_equal(s, r, buf);
    ps_snapshot_free(s);

    free(back);
    free(buf);
    ps_region_free(r);
    ps_store_free(store);
    DONE();
}
