/* Out of memory through the C API: under an address-space limit a little above
 * current use, ps_snapshot_take() of 64 MiB of written pages fails with an
 * "out of memory" error (not a caught panic), and once the limit is lifted the
 * next snapshot equals the region's bytes. This program is its own process, so
 * the limit touches nothing else. */
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

static void set_limit(int on) {
    struct rlimit lim;
    CHECK(getrlimit(RLIMIT_AS, &lim) == 0);
    lim.rlim_cur = on ? vm_size() + HEADROOM : lim.rlim_max;
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_cur > lim.rlim_max) lim.rlim_cur = lim.rlim_max;
    CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
}

static void run(int tracking) {
    ps_store *store = ps_store_new();
    ps_region *r = ps_region_new(store, LEN, tracking);
    CHECK(store != NULL && r != NULL);
    printf("  %s tracking\n", ps_tracking_name(ps_region_tracking(r)));
    unsigned char *bytes = ps_region_ptr(r);
    size_t page = ps_page_size();
    for (size_t p = 0; p < LEN / page; p++) {
        uint64_t stamp[2] = {7, p};
        memcpy(bytes + p * page, stamp, sizeof stamp);
    }
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
    DONE();
}
