/* fork() through the C API, on every backend this machine offers: a child's
 * ps_snapshot_take / ps_restore / ps_background_* on an inherited region are
 * refused with a message naming the fork (never a crash or a hang); the parent's
 * snapshots and restores stay exact. A child forked during a background
 * snapshot can write the region and wait on the inherited handle. Children run
 * under alarm(): a hang ends as SIGALRM, which the parent reports. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static const int BACKENDS[] = {PS_TRACKING_UFFD_WP, PS_TRACKING_SOFT_DIRTY, PS_TRACKING_MPROTECT,
                               PS_TRACKING_COMPARE};

/* The snapshot's bytes equal `expect` (len bytes). */
static int snapshot_equals(const ps_snapshot *s, const unsigned char *expect, size_t len) {
    unsigned char *buf = malloc(len);
    CHECK(buf != NULL);
    CHECK(ps_snapshot_read(s, 0, buf, len) == 0);
    int same = memcmp(buf, expect, len) == 0;
    free(buf);
    return same;
}

/* Waits for `pid`; checks it exited 0. */
static void check_child(pid_t pid, const char *what) {
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "%s: child %s %d\n", what, WIFEXITED(status) ? "exited" : "killed by signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* In the child: the last call failed with a message about the fork. */
#define CHILD_REFUSED(call, code)                                                      \
    do {                                                                               \
        if (!(call) || strstr(ps_last_error(), "forked") == NULL) {                    \
            fprintf(stderr, "child: %s: \"%s\"\n", #call, ps_last_error());            \
            _exit(code);                                                               \
        }                                                                              \
    } while (0)

static void refused_in_child(ps_store *store, int tracking) {
    size_t page = ps_page_size(), len = 64 * page;
    ps_region *r = ps_region_new(store, len, tracking);
    CHECK(r != NULL);
    unsigned char *mem = ps_region_ptr(r);
    memset(mem, 0x11, len);
    ps_snapshot *s0 = ps_snapshot_take(r);
    CHECK(s0 != NULL);
    unsigned char *s0_bytes = malloc(len);
    CHECK(s0_bytes != NULL);
    memcpy(s0_bytes, mem, len);
    mem[3 * page] = 0x22;
    mem[9 * page] = 0x33;

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(20);
        mem[5 * page] = 0x44; /* the child's own copy */
        mem[9 * page] = 0x55;
        CHILD_REFUSED(ps_restore(r, s0) == -1, 2);
        CHILD_REFUSED(ps_snapshot_take(r) == NULL, 3);
        CHILD_REFUSED(ps_background_snapshot(r) == NULL, 4);
        if (mem[5 * page] != 0x44 || mem[0] != 0x11) _exit(5);
        _exit(0);
    }
    check_child(pid, ps_tracking_name(tracking));
    CHECK(mem[5 * page] == 0x11 && mem[9 * page] == 0x33);

    ps_snapshot *s1 = ps_snapshot_take(r);
    CHECK(s1 != NULL);
    CHECK(snapshot_equals(s1, mem, len));
    CHECK(ps_restore(r, s0) == 0);
    CHECK(memcmp(mem, s0_bytes, len) == 0);
    CHECK(ps_restore(r, s1) == 0);
    CHECK(mem[3 * page] == 0x22 && mem[9 * page] == 0x33);
    CHECK(ps_snapshot_free(s1) == 0);
    CHECK(ps_snapshot_free(s0) == 0);
    CHECK(ps_region_free(r) == 0);
    free(s0_bytes);
}

static void during_background(ps_store *store, int tracking) {
    size_t page = ps_page_size(), len = 16u << 20;
    ps_region *r = ps_region_new(store, len, tracking);
    CHECK(r != NULL);
    unsigned char *mem = ps_region_ptr(r);
    memset(mem, 0x66, len);
    unsigned char *instant = malloc(len);
    CHECK(instant != NULL);
    memcpy(instant, mem, len);
    ps_background *bg = ps_background_snapshot(r);
    CHECK(bg != NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(20);
        for (size_t at = 0; at < len; at += page) mem[at] = 0x77;
        CHILD_REFUSED(ps_background_wait(bg) == NULL, 2);
        _exit(0);
    }
    mem[len - 1] = 0x88;
    ps_snapshot *snap = ps_background_wait(bg);
    CHECK(snap != NULL);
    CHECK(snapshot_equals(snap, instant, len));
    check_child(pid, ps_tracking_name(tracking));
    ps_snapshot *now = ps_snapshot_take(r);
    CHECK(now != NULL);
    CHECK(snapshot_equals(now, mem, len));
    CHECK(mem[0] == 0x66 && mem[len - 1] == 0x88);
    CHECK(ps_snapshot_free(now) == 0);
    CHECK(ps_snapshot_free(snap) == 0);
    CHECK(ps_region_free(r) == 0);
    free(instant);
}

int main(void) {
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    for (size_t i = 0; i < sizeof BACKENDS / sizeof BACKENDS[0]; i++) {
        if (ps_tracking_available(BACKENDS[i]) != 1) {
            printf("  skip %s: %s\n", ps_tracking_name(BACKENDS[i]), ps_last_error());
            continue;
        }
        printf("  backend %s\n", ps_tracking_name(BACKENDS[i]));
        refused_in_child(store, BACKENDS[i]);
        during_background(store, BACKENDS[i]);
    }
    CHECK(ps_store_free(store) == 0);
    DONE();
}
