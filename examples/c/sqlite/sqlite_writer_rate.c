/* How fast a real database writer goes on while its memory is snapshotted: an
 * in-memory SQLite database whose whole heap is a pagesnap region, one thread
 * inserting 100-row transactions (an index on a random column spreads the
 * B-tree writes over the whole heap), and its insert rate measured before and
 * during each way of taking a consistent copy:
 *
 *   snapshot        ps_background_snapshot()       (point-in-time, into the store)
 *   save            ps_background_save_start()     (point-in-time, to a file)
 *   converge        ps_converging_start(r, NULL)   (converging, into the store)
 *   converge-save   ps_converging_start(r, path)   (converging, to a file)
 *   fork            fork(); the child writes sqlite3_serialize() to a file
 *   none            nothing, for 500 ms: the control (how the rate moves alone)
 *
 * Each run builds a fresh region and database (so every method copies the whole
 * database, as fork does), measures the writer alone for a while, then during
 * the method (from its start until the copy is complete), and checks the copy:
 * restored (or, for fork, deserialized) it passes PRAGMA integrity_check and
 * holds exactly the rows committed at its instant. Point-in-time methods start
 * and converging methods finish between two transactions (the writer's mutex
 * held), fork forks there.
 *
 * With a fifth argument `steady`, the point-in-time methods first take one
 * background snapshot of the built database and free it (untimed), as a
 * program that snapshots periodically has done before: the measured snapshot
 * then stages into memory the store already holds. With `reserve` instead, the
 * store reserves memory for the database's heap (ps_store_reserve(), untimed),
 * as a program that reserves its data's size at start-up does: a first
 * snapshot then stages into that memory.
 *
 * Build: as sqlite_pagesnap.c. Run:
 *   sqlite_writer_rate MB RUNS DIR [METHODS [steady|reserve]]   e.g. 200 5 /tmp
 * Prints one line per run and the median ratio per method ("during / before"),
 * and the writer time lost: the window times (1 - ratio), the milliseconds of
 * work the writer would have done more alone. A short window concentrates a
 * copy's cost, so compare methods by both.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "sqlite_heap.h"

static pthread_mutex_t tx = PTHREAD_MUTEX_INITIALIZER; /* held around each transaction */
static atomic_int quiesce; /* the main thread wants the writer between two transactions */
static atomic_int stop_writer;
static atomic_long commits;

static void *writer(void *arg) {
    sqlite3 *db = arg;
    sqlite3_stmt *ins;
    EXPECT(sqlite3_prepare_v2(db, "INSERT INTO t(v, s) VALUES (abs(random()) % 1000003, "
                                  "hex(randomblob(100)))",
                              -1, &ins, NULL) == SQLITE_OK);
    while (!atomic_load(&stop_writer)) {
        pthread_mutex_lock(&tx);
        sql(db, "BEGIN");
        for (int i = 0; i < 100; i++) {
            EXPECT(sqlite3_step(ins) == SQLITE_DONE);
            sqlite3_reset(ins);
        }
        sql(db, "COMMIT");
        atomic_fetch_add(&commits, 1);
        pthread_mutex_unlock(&tx);
        /* A mutex is not fair: without this the writer takes it straight back,
         * and the main thread may wait hundreds of transactions for it. */
        while (atomic_load(&quiesce)) sched_yield();
    }
    sqlite3_finalize(ins);
    return NULL;
}

/* Takes the writer's mutex between two of its transactions, promptly, as an
 * event loop reaches its quiescent point. */
static void quiescent_lock(void) {
    atomic_store(&quiesce, 1);
    pthread_mutex_lock(&tx);
    atomic_store(&quiesce, 0);
}

/* The writer's commits per millisecond over `ms` milliseconds from now. */
static double rate_for(double ms) {
    long c0 = atomic_load(&commits);
    double t0 = now_ms();
    while (now_ms() - t0 < ms) usleep(2000);
    return (double)(atomic_load(&commits) - c0) / (now_ms() - t0);
}

/* What one run of a method measured. */
struct result {
    double before, during, window_ms, pause_ms;
};

/* Checks `db` (the copy) against the rows committed at its instant. */
static void check_copy(sqlite3 *db, long long want_rows, const char *method) {
    long long rows = one(db, "SELECT count(*) FROM t");
    if (rows != want_rows || !integrity_ok(db)) {
        fprintf(stderr, "%s: the copy holds %lld rows (want %lld), integrity %s\n", method,
                rows, want_rows, integrity_ok(db) ? "ok" : "FAILED");
        exit(1);
    }
}

static long long rows_at_instant(long long rows0) {
    return rows0 + 100LL * atomic_load(&commits);
}

enum prepare { FIRST, STEADY, RESERVE };

static struct result run_one(const char *method, long mb, const char *dir, double base_ms,
                             enum prepare prep) {
    ps_store *store = ps_store_new();
    ps_region *r = ps_region_new(store, (size_t)(mb * 5 + 256) << 20, PS_TRACKING_AUTO);
    EXPECT(r != NULL && ps_heap_init(r) == 0);
    use_region_for_sqlite(r);
    sqlite3 *db;
    EXPECT(sqlite3_open(":memory:", &db) == SQLITE_OK);
    sql(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, s TEXT); CREATE INDEX tv ON t(v)");
    char stmt[256];
    snprintf(stmt, sizeof stmt,
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %ld) "
             "INSERT INTO t(v, s) SELECT abs(random()) %% 1000003, hex(randomblob(100)) FROM n",
             mb * 1000000 / 260);
    sql(db, stmt);
    long long rows0 = one(db, "SELECT count(*) FROM t");
    if (prep == RESERVE && (strcmp(method, "snapshot") == 0 || strcmp(method, "converge") == 0)) {
        /* Memory for a copy of the heap, faulted in before the writer starts. */
        ps_heap_usage u;
        EXPECT(ps_heap_stats(r, &u) == 0);
        EXPECT(ps_store_reserve(store, (size_t)(u.in_use_bytes + u.in_use_bytes / 4)) == 0);
    }
    if (prep == STEADY && (strcmp(method, "snapshot") == 0 || strcmp(method, "save") == 0)) {
        /* A periodic program's earlier snapshot, freed: the store keeps its memory. */
        ps_background *bg = ps_background_snapshot(r);
        EXPECT(bg != NULL);
        ps_snapshot *earlier = ps_background_wait(bg);
        EXPECT(earlier != NULL);
        ps_snapshot_free(earlier);
    }
    atomic_store(&commits, 0);
    atomic_store(&stop_writer, 0);
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, writer, db) == 0);
    rate_for(base_ms / 4); /* warm up */
    struct result res = {0};
    res.before = rate_for(base_ms);

    char path[4096];
    snprintf(path, sizeof path, "%s/writer-rate-%d.copy", dir, (int)getpid());
    long long want = 0;
    ps_snapshot *copy = NULL;
    pid_t child = 0;
    long c0 = atomic_load(&commits);
    double t0 = now_ms(), p0;
    if (strcmp(method, "snapshot") == 0 || strcmp(method, "save") == 0) {
        int save = method[1] == 'a';
        quiescent_lock();
        want = rows_at_instant(rows0);
        p0 = now_ms();
        ps_background *bg = save ? NULL : ps_background_snapshot(r);
        ps_save_job *job = save ? ps_background_save_start(r, path) : NULL;
        res.pause_ms = now_ms() - p0;
        pthread_mutex_unlock(&tx);
        EXPECT(bg != NULL || job != NULL);
        if (save) {
            EXPECT(ps_save_job_wait(job, NULL) == 0);
        } else {
            EXPECT((copy = ps_background_wait(bg)) != NULL);
        }
    } else if (strcmp(method, "converge") == 0 || strcmp(method, "converge-save") == 0) {
        int save = method[8] == '-';
        ps_converging *c = ps_converging_start(r, save ? path : NULL);
        EXPECT(c != NULL);
        EXPECT(ps_converging_wait(c, -1) == 1);
        quiescent_lock(); /* the quiescent point: between two transactions */
        want = rows_at_instant(rows0);
        p0 = now_ms();
        if (save) {
            EXPECT(ps_converging_finish_save(c) == 0);
        } else {
            EXPECT((copy = ps_converging_finish(c)) != NULL);
        }
        res.pause_ms = now_ms() - p0;
        pthread_mutex_unlock(&tx);
        if (save) EXPECT(ps_converging_save_wait(c, NULL) == 0);
    } else if (strcmp(method, "fork") == 0) {
        quiescent_lock();
        want = rows_at_instant(rows0);
        p0 = now_ms();
        child = fork();
        EXPECT(child >= 0);
        if (child == 0) {
            sqlite3_int64 n = 0;
            unsigned char *img = sqlite3_serialize(db, "main", &n, 0);
            FILE *f = fopen(path, "wb");
            int ok = img != NULL && f != NULL && fwrite(img, 1, (size_t)n, f) == (size_t)n &&
                     fclose(f) == 0;
            _exit(ok ? 0 : 1);
        }
        res.pause_ms = now_ms() - p0;
        pthread_mutex_unlock(&tx);
        int status;
        EXPECT(waitpid(child, &status, 0) == child && WIFEXITED(status) &&
               WEXITSTATUS(status) == 0);
    } else if (strcmp(method, "none") == 0) {
        /* The control: a window as long as a typical copy, with no copy. */
        struct timespec half = {0, 500 * 1000 * 1000};
        while (nanosleep(&half, &half) != 0) {
        }
    } else {
        fprintf(stderr, "unknown method %s\n", method);
        exit(2);
    }
    res.window_ms = now_ms() - t0;
    res.during = (double)(atomic_load(&commits) - c0) / res.window_ms;
    atomic_store(&stop_writer, 1);
    EXPECT(pthread_join(t, NULL) == 0);

    /* The copy: restored into the region (the connection lives there too), or
     * for fork the serialized image, deserialized into a second connection. */
    if (child != 0) {
        FILE *f = fopen(path, "rb");
        EXPECT(f != NULL && fseek(f, 0, SEEK_END) == 0);
        long n = ftell(f);
        unsigned char *img = sqlite3_malloc64((sqlite3_uint64)n);
        EXPECT(img != NULL && fseek(f, 0, SEEK_SET) == 0 && fread(img, 1, (size_t)n, f) == (size_t)n);
        fclose(f);
        sqlite3 *back;
        EXPECT(sqlite3_open(":memory:", &back) == SQLITE_OK);
        EXPECT(sqlite3_deserialize(back, "main", img, n, n, SQLITE_DESERIALIZE_FREEONCLOSE) ==
               SQLITE_OK);
        check_copy(back, want, method);
        sqlite3_close(back);
    } else if (strcmp(method, "none") != 0) {
        if (copy == NULL) EXPECT((copy = ps_snapshot_load(store, path)) != NULL);
        EXPECT(ps_restore(r, copy) == 0);
        check_copy(db, want, method);
        ps_snapshot_free(copy);
    }
    remove(path);
    sqlite3_close(db);
    EXPECT(sqlite3_shutdown() == SQLITE_OK);
    ps_region_free(r);
    ps_store_free(store);
    return res;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s MB RUNS DIR [snapshot,save,converge,converge-save,fork,none "
                "[steady|reserve]]\n",
                argv[0]);
        return 2;
    }
    long mb = atol(argv[1]);
    int runs = atoi(argv[2]);
    EXPECT(mb > 0 && runs > 0 && runs <= 64);
    char methods[256] = "snapshot,save,converge,converge-save,fork";
    if (argc > 4) snprintf(methods, sizeof methods, "%s", argv[4]);
    enum prepare prep = FIRST;
    if (argc > 5) {
        EXPECT(strcmp(argv[5], "steady") == 0 || strcmp(argv[5], "reserve") == 0);
        prep = strcmp(argv[5], "steady") == 0 ? STEADY : RESERVE;
    }
    double base_ms = mb >= 64 ? 1000 : 200;
    printf("database ~%ld MB, 100-row transactions, %d runs per method%s\n", mb, runs,
           prep == STEADY    ? ", after an earlier snapshot"
           : prep == RESERVE ? ", store memory reserved"
                             : "");
    for (char *m = strtok(methods, ","); m != NULL; m = strtok(NULL, ",")) {
        double ratios[64], lost[64];
        for (int i = 0; i < runs; i++) {
            struct result r = run_one(m, mb, argv[3], base_ms, prep);
            EXPECT(r.before > 0);
            ratios[i] = r.during / r.before;
            lost[i] = r.window_ms * (1 - ratios[i]);
            printf("%s run %d: before %.2f tx/ms, during %.2f tx/ms over %.0f ms "
                   "(pause %.2f ms): ratio %.2f, writer time lost %.0f ms, %s\n",
                   m, i + 1, r.before, r.during, r.window_ms, r.pause_ms, ratios[i], lost[i],
                   strcmp(m, "none") == 0 ? "no copy" : "copy checked");
            fflush(stdout);
        }
        qsort(ratios, (size_t)runs, sizeof ratios[0], by_value);
        qsort(lost, (size_t)runs, sizeof lost[0], by_value);
        printf("median %s: %.2f (min %.2f, max %.2f); writer time lost %.0f ms (%.0f to %.0f)\n",
               m, ratios[runs / 2], ratios[0], ratios[runs - 1], lost[runs / 2], lost[0],
               lost[runs - 1]);
    }
    printf("ok: writer rate measured\n");
    return 0;
}
