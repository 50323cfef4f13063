/* SQLite with its whole heap in a pagesnap region: an in-memory database rolled
 * back by ps_restore() (against SAVEPOINT ... ROLLBACK TO and
 * sqlite3_serialize/deserialize), a background save beside a writer thread, and
 * a fresh process that continues the saved database at its origin address.
 *
 * Build (non-PIE, SQLite linked statically: the connection holds pointers to
 * SQLite's code and static data, which must be at the same addresses in every
 * process that continues it):
 *   cc -O2 -Wall -Wextra -Werror -pthread -no-pie -I crates/pagesnap-ffi/include \
 *      -I examples/c examples/c/sqlite/sqlite_pagesnap.c -o sqlite_pagesnap \
 *      -L target/release -lpagesnap -Wl,-Bstatic -lsqlite3 -Wl,-Bdynamic -lm -ldl
 * Run:
 *   sqlite_pagesnap check DIR    correctness checks (what `cargo test` runs)
 *   sqlite_pagesnap bench [MB]   figures: 100 snapshots against 100 serialize copies
 */
#include <pthread.h>
#include <stdatomic.h>

#include "sqlite_heap.h"

/* What the table holds, as one number (rows, values and text lengths mixed). */
static long long fingerprint(sqlite3 *db) {
    return one(db, "SELECT count(*) * 1000003 + coalesce(sum(v), 0) * 31 + "
                   "coalesce(sum(length(s)), 0) FROM t");
}

static void fill(sqlite3 *db, long rows, int text_len) {
    sql(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, s TEXT);"
            "CREATE INDEX tv ON t(v)");
    char stmt[256];
    snprintf(stmt, sizeof stmt,
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %ld) "
             "INSERT INTO t(v, s) SELECT (i * 7919) %% 100003, hex(randomblob(%d)) FROM n",
             rows, text_len / 2);
    sql(db, "BEGIN");
    sql(db, stmt);
    sql(db, "COMMIT");
}

/* Some deletes, updates and inserts, different for each `round`. */
static void mutate(sqlite3 *db, int round) {
    char stmt[512];
    snprintf(stmt, sizeof stmt,
             "DELETE FROM t WHERE id %% 97 = %d;"
             "UPDATE t SET v = v + %d, s = s || 'x' WHERE id %% 89 = %d;"
             "INSERT INTO t(v, s) SELECT v + 1, 'new' FROM t WHERE id %% 101 = %d",
             round % 97, round + 1, round % 89, round % 101);
    sql(db, stmt);
}

static sqlite3 *open_db(ps_region *r) {
    sqlite3 *db;
    EXPECT(sqlite3_open(":memory:", &db) == SQLITE_OK);
    EXPECT(ps_heap_set_root(r, 0, db) == 0);
    return db;
}

/* ---- a writer thread for the background save --------------------------------- */

static pthread_mutex_t tx = PTHREAD_MUTEX_INITIALIZER; /* held around each transaction */
static atomic_int stop_writer;
static atomic_long writer_commits;

static void *writer(void *arg) {
    sqlite3 *db = arg;
    for (int i = 0; !atomic_load(&stop_writer); i++) {
        pthread_mutex_lock(&tx);
        sql(db, "BEGIN");
        sql(db, "INSERT INTO t(v, s) VALUES (42, hex(randomblob(40)))");
        sql(db, "UPDATE t SET v = v + 1 WHERE id = (SELECT max(id) FROM t)");
        sql(db, "COMMIT");
        pthread_mutex_unlock(&tx);
        atomic_fetch_add(&writer_commits, 1);
    }
    return NULL;
}

/* ---- check: what `cargo test` runs ------------------------------------------ */

static int check(const char *dir, const char *self) {
    ps_store *store = ps_store_new();
    ps_region *r = region_at_fixed_address(store, 256u << 20);
    EXPECT(r != NULL && ps_heap_init(r) == 0);
    use_region_for_sqlite(r);
    sqlite3 *db = open_db(r);
    fill(db, 10000, 60);
    long long fp0 = fingerprint(db);
    ps_snapshot *s0 = ps_snapshot_take(r);
    EXPECT(s0 != NULL);

    /* 1. rollback: ps_restore against SAVEPOINT ... ROLLBACK TO */
    mutate(db, 1);
    long long fp1 = fingerprint(db);
    EXPECT(fp1 != fp0);
    EXPECT(ps_restore(r, s0) == 0);
    EXPECT(fingerprint(db) == fp0 && integrity_ok(db));
    sql(db, "SAVEPOINT a");
    mutate(db, 1);
    EXPECT(fingerprint(db) == fp1);
    sql(db, "ROLLBACK TO a; RELEASE a");
    EXPECT(fingerprint(db) == fp0);

    /* 2. ... and against sqlite3_serialize / sqlite3_deserialize */
    sqlite3_int64 size = 0;
    unsigned char *image = sqlite3_serialize(db, "main", &size, 0);
    EXPECT(image != NULL && size > 0);
    mutate(db, 2);
    sqlite3 *copy;
    EXPECT(sqlite3_open(":memory:", &copy) == SQLITE_OK);
    EXPECT(sqlite3_deserialize(copy, "main", image, size, size,
                               SQLITE_DESERIALIZE_FREEONCLOSE |
                                   SQLITE_DESERIALIZE_RESIZEABLE) == SQLITE_OK);
    EXPECT(fingerprint(copy) == fp0 && integrity_ok(copy));
    sqlite3_close(copy);

    /* 3. many snapshots, restored in any order */
    enum { N = 12 };
    ps_snapshot *snaps[N];
    long long fps[N];
    for (int i = 0; i < N; i++) {
        mutate(db, 10 + i);
        fps[i] = fingerprint(db);
        EXPECT((snaps[i] = ps_snapshot_take(r)) != NULL);
    }
    for (int k = 0; k < 3 * N; k++) {
        int i = (k * 7) % N;
        EXPECT(ps_restore(r, snaps[i]) == 0);
        EXPECT(fingerprint(db) == fps[i]);
    }
    EXPECT(integrity_ok(db));
    for (int i = 0; i < N; i++) ps_snapshot_free(snaps[i]);
    EXPECT(ps_restore(r, s0) == 0);

    /* 4. a background save beside a writer thread: the instant is taken while we
     *    hold `tx`, so no transaction is half done in the file */
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, writer, db) == 0);
    while (atomic_load(&writer_commits) < 50) sched_yield();
    char path[4096];
    snprintf(path, sizeof path, "%s/sqlite.snap", dir);
    pthread_mutex_lock(&tx);
    long long fp_instant = fingerprint(db);
    ps_save_job *job = ps_background_save_start(r, path);
    pthread_mutex_unlock(&tx);
    EXPECT(job != NULL);
    long before_wait = atomic_load(&writer_commits);
    ps_save_report rep;
    EXPECT(ps_save_job_wait(job, &rep) == 0);
    while (atomic_load(&writer_commits) < before_wait + 20) sched_yield();
    atomic_store(&stop_writer, 1);
    EXPECT(pthread_join(t, NULL) == 0);
    EXPECT(fingerprint(db) != fp_instant); /* the writer went on */
    printf("background save: %llu pages copied, file %llu bytes, writers waited for %llu "
           "batches, %ld commits while saving\n",
           (unsigned long long)rep.copied_pages, (unsigned long long)rep.file_bytes,
           (unsigned long long)rep.writer_waits, atomic_load(&writer_commits) - before_wait);
    ps_snapshot *saved = ps_snapshot_load(store, path);
    EXPECT(saved != NULL && ps_snapshot_origin(saved) == ps_region_ptr(r));
    EXPECT(ps_restore(r, saved) == 0);
    EXPECT(fingerprint(db) == fp_instant && integrity_ok(db));
    sql(db, "INSERT INTO t(v, s) VALUES (1, 'after restore')"); /* the connection works */

    /* 5. a fresh process loads the file, maps it at its origin and continues */
    char want[64];
    snprintf(want, sizeof want, "%lld", fp_instant);
    char *args[] = {(char *)self, "continue", path, want, NULL};
    char *out = run_fresh_process(args);
    EXPECT(out != NULL);
    EXPECT(strstr(out, "continued: integrity ok, fingerprint matches") != NULL);
    printf("%s", out);
    free(out);

    ps_snapshot_free(saved);
    ps_snapshot_free(s0);
    printf("ok: sqlite %s\n", sqlite3_libversion());
    return 0;
}

/* The fresh process: continue the database saved at `path`. */
static int continue_saved(const char *path, const char *want) {
    ps_store *store = ps_store_new();
    ps_snapshot *snap = ps_snapshot_load(store, path);
    EXPECT(snap != NULL && ps_snapshot_origin(snap) != NULL);
    ps_region *r = ps_snapshot_instantiate_at(snap, ps_snapshot_origin(snap), PS_TRACKING_AUTO);
    EXPECT(r != NULL);
    use_region_for_sqlite(r);
    sqlite3 *db = ps_heap_root(r, 0);
    EXPECT(db != NULL);
    EXPECT(integrity_ok(db));
    EXPECT(fingerprint(db) == atoll(want));
    long long rows = one(db, "SELECT count(*) FROM t");
    sql(db, "INSERT INTO t(v, s) VALUES (7, 'from the fresh process')");
    EXPECT(one(db, "SELECT count(*) FROM t") == rows + 1);
    /* between requests: back to the saved state */
    EXPECT(ps_region_reset(r) == 0);
    EXPECT(fingerprint(db) == atoll(want) && integrity_ok(db));
    printf("continued: integrity ok, fingerprint matches (%lld rows)\n", rows);
    return 0;
}

/* ---- bench: 100 snapshots against 100 serialize copies ---------------------- */

static int bench(long mb) {
    ps_store *store = ps_store_new();
    ps_region *r = region_at_fixed_address(store, (size_t)(mb * 4 + 256) << 20);
    EXPECT(r != NULL && ps_heap_init(r) == 0);
    use_region_for_sqlite(r);
    sqlite3 *db = open_db(r);
    fill(db, mb * 1000000 / 216, 200);
    long long bytes = one(db, "PRAGMA page_count") * one(db, "PRAGMA page_size");
    ps_snapshot *base = ps_snapshot_take(r);
    ps_stats st0, st1;
    ps_store_stats(store, &st0);
    ps_snapshot *snaps[100];
    long rows = (long)one(db, "SELECT max(id) FROM t");
    double snap_ms = 0, ser_ms = 0;
    size_t held = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 100; i++) {
            /* a small transaction: 20 rows updated by key, as an OLTP step would */
            char stmt[160];
            sql(db, "BEGIN");
            for (int k = 0; k < 20; k++) {
                long id = 1 + (long)(((unsigned long)(i * 20 + k) * 2654435761u) % (unsigned long)rows);
                snprintf(stmt, sizeof stmt, "UPDATE t SET v = v + 1 WHERE id = %ld", id);
                sql(db, stmt);
            }
            sql(db, "COMMIT");
            double t = now_ms();
            if (pass == 0) {
                snaps[i] = ps_snapshot_take(r);
                EXPECT(snaps[i] != NULL);
                snap_ms += now_ms() - t;
            } else {
                sqlite3_int64 n;
                unsigned char *img = sqlite3_serialize(db, "main", &n, 0);
                EXPECT(img != NULL);
                ser_ms += now_ms() - t;
                held += (size_t)n; /* a real user keeps each copy; we count it, free it */
                sqlite3_free(img);
            }
        }
        if (pass == 0) ps_store_stats(store, &st1);
    }
    double beyond = (double)(st1.stored_bytes - st0.stored_bytes) / (1 << 20);
    printf("database %.0f MB: 100 snapshots hold %.1f MiB beyond the base (%.2f ms each); "
           "100 serialize copies %.1f GiB (%.2f ms each)\n",
           (double)bytes / 1e6, beyond, snap_ms / 100, (double)held / (1 << 30), ser_ms / 100);
    for (int i = 0; i < 100; i++) ps_snapshot_free(snaps[i]);
    ps_snapshot_free(base);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "check") == 0) return check(argv[2], argv[0]);
    if (argc == 4 && strcmp(argv[1], "continue") == 0) return continue_saved(argv[2], argv[3]);
    if (argc >= 2 && strcmp(argv[1], "bench") == 0) return bench(argc > 2 ? atol(argv[2]) : 196);
    fprintf(stderr, "usage: %s check DIR | continue FILE FINGERPRINT | bench [MB]\n", argv[0]);
    return 2;
}
