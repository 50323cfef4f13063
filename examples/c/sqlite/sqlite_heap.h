/* SQLite with its whole heap in a pagesnap region: the allocator
 * (sqlite3_mem_methods over ps_heap_*) and small SQL helpers, shared by the
 * examples in this folder. */
#ifndef PAGESNAP_SQLITE_HEAP_H
#define PAGESNAP_SQLITE_HEAP_H

#include <sqlite3.h>

#include "example_util.h"

/* ---- the allocator: sqlite3_mem_methods over ps_heap_* ---------------------- */

static ps_region *heap; /* outside the region: set in each process */

static inline void *x_malloc(int n) { return ps_heap_alloc(heap, (size_t)n); }
static inline void x_free(void *p) { ps_heap_free(heap, p); }
static inline void *x_realloc(void *p, int n) { return ps_heap_realloc(heap, p, (size_t)n); }
static inline int x_size(void *p) { return (int)ps_heap_usable_size(heap, p); }
static inline int x_roundup(int n) { return ((n < 1 ? 1 : n) + 15) & ~15; }
static inline int x_init(void *arg) { (void)arg; return SQLITE_OK; }
static inline void x_shutdown(void *arg) { (void)arg; }

static inline void use_region_for_sqlite(ps_region *r) {
    static const sqlite3_mem_methods methods = {x_malloc, x_free,   x_realloc, x_size,
                                                x_roundup, x_init, x_shutdown, NULL};
    heap = r;
    EXPECT(sqlite3_config(SQLITE_CONFIG_MALLOC, &methods) == SQLITE_OK);
    /* SQLite's memory statistics are globals, outside the region: they would not
     * roll back, so turn them off. */
    EXPECT(sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK);
    EXPECT(sqlite3_initialize() == SQLITE_OK);
}

/* ---- small SQL helpers ------------------------------------------------------ */

static inline void sql(sqlite3 *db, const char *text) {
    char *err = NULL;
    if (sqlite3_exec(db, text, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "SQL error in %s: %s\n", text, err);
        exit(1);
    }
}

static inline long long one(sqlite3 *db, const char *text) {
    sqlite3_stmt *st;
    EXPECT(sqlite3_prepare_v2(db, text, -1, &st, NULL) == SQLITE_OK);
    EXPECT(sqlite3_step(st) == SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static inline int integrity_ok(sqlite3 *db) {
    sqlite3_stmt *st;
    EXPECT(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK);
    EXPECT(sqlite3_step(st) == SQLITE_ROW);
    int ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
    return ok;
}

#endif
