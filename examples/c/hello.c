#include <stdio.h>
#include <string.h>
#include <pagesnap.h>

int main(void) {
    ps_store *store = ps_store_new();
    ps_region *region = ps_region_new(store, 64 << 20, PS_TRACKING_AUTO);
    if (!region) { fprintf(stderr, "pagesnap: %s\n", ps_last_error()); return 1; }
    char *mem = ps_region_ptr(region);            /* 64 MiB, tracked, zeroed */

    strcpy(mem, "first state");
    ps_snapshot *first = ps_snapshot_take(region);  /* stores the one page written */
    strcpy(mem, "later state");
    ps_restore(region, first);                      /* writes back one page */
    printf("%s (tracking: %s)\n", mem, ps_tracking_name(ps_region_tracking(region)));

    ps_snapshot_free(first);
    ps_region_free(region);
    ps_store_free(store);
    return 0;
}
