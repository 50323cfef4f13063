/* Out of memory through the C API: under an address-space limit a little above
 * current use, ps_snapshot_take() of 64 MiB of written pages fails with an
 * "out of memory" error (not a caught panic), and once the limit is lifted the
 * next snapshot equals the region's bytes. Then a converging snapshot, which
 * starts two threads and builds tables in one of them, under a limit swept in
 * 32 KiB steps from nothing to 16 MiB: each finish is the region's bytes or a
 * reported error, and the process never aborts (it did, in a round's table
 * update, before such work checked for room). This program is its own process,
 * so the limit touches nothing else. */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"

#define LEN ((size_t)64 << 20)
#define HEADROOM ((rlim_t)16 << 20)

static rlim_t vm_size(void) {
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char line[256];
    unsigned long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %lu kB", &kib) == 1) break;
    fclose(f);
    CHECK(kib > 0);
    return (rlim_t)kib * 1024;
}

static void set_headroom(rlim_t headroom, int on) {
    struct rlimit lim;
    CHECK(getrlimit(RLIMIT_AS, &lim) == 0);
    lim.rlim_cur = on ? vm_size() + headroom : lim.rlim_max;
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_cur > lim.rlim_max) lim.rlim_cur = lim.rlim_max;
    CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
}

static void set_limit(int on) { set_headroom(HEADROOM, on); }

static void stamp_all(unsigned char *bytes, size_t len, uint64_t gen) {
    size_t page = ps_page_size();
    for (size_t p = 0; p < len / page; p++) {
        uint64_t stamp[2] = {gen, p};
        memcpy(bytes + p * page, stamp, sizeof stamp);
    }
}

static void converging_sweep(void) {
    const size_t len = (size_t)4 << 20;
    ps_store *store = ps_store_new();
    ps_region *r = ps_region_new(store, len, PS_TRACKING_AUTO);
    CHECK(store != NULL && r != NULL);
    unsigned char *bytes = ps_region_ptr(r);
    unsigned char *copy = malloc(len);
    CHECK(copy != NULL);
    int ok = 0, failed = 0;
    for (uint64_t step = 0; step < 512; step++) {
        stamp_all(bytes, len, 10 + step);
        set_headroom((rlim_t)step * 32768, 1);
        ps_snapshot *snap = NULL;
        ps_converging *conv = ps_converging_start(r, NULL);
        if (conv != NULL) {
            CHECK(ps_converging_wait(conv, -1) == 1);
            snap = ps_converging_finish(conv);
        }
        char message[1024];
        snprintf(message, sizeof message, "%s", ps_last_error());
        set_headroom(0, 0);
        if (snap == NULL) {
            failed++;
            CHECK(strstr(message, "panic") == NULL);
            snap = ps_snapshot_take(r);
            CHECK(snap != NULL);
        } else {
            ok++;
        }
        CHECK(ps_snapshot_read(snap, 0, copy, len) == 0);
        CHECK(memcmp(copy, bytes, len) == 0);
        CHECK(ps_snapshot_free(snap) == 0);
    }
    printf("  converging under a swept limit: %d finished, %d refused\n", ok, failed);
    CHECK(ok > 0 && failed > 0);
    free(copy);
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_store_free(store) == 0);
}

static void run(int tracking) {
    ps_store *store = ps_store_new();
    ps_region *r = ps_region_new(store, LEN, tracking);
    CHECK(store != NULL && r != NULL);
    printf("  %s tracking\n", ps_tracking_name(ps_region_tracking(r)));
    unsigned char *bytes = ps_region_ptr(r);
    stamp_all(bytes, LEN, 7);
    unsigned char *copy = malloc(LEN);
    CHECK(copy != NULL);

    set_limit(1);
    ps_snapshot *failed = ps_snapshot_take(r);
    char message[1024];
    snprintf(message, sizeof message, "%s", ps_last_error());
    set_limit(0);
    CHECK(failed == NULL);
    printf("  under the limit: %s\n", message);
    CHECK(strstr(message, "out of memory") != NULL);
    CHECK(strstr(message, "panic") == NULL);

    ps_snapshot *snap = ps_snapshot_take(r);
    CHECK(snap != NULL);
    CHECK(ps_snapshot_read(snap, 0, copy, LEN) == 0);
    CHECK(memcmp(copy, bytes, LEN) == 0);

    free(copy);
    CHECK(ps_snapshot_free(snap) == 0);
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_store_free(store) == 0);
}

int main(void) {
    alarm(120);
    run(PS_TRACKING_AUTO);
    if (ps_tracking_available(PS_TRACKING_MPROTECT) == 1) run(PS_TRACKING_MPROTECT);
    converging_sweep();
    DONE();
}
