/* Submission order (see sweep_order.h). */
#include "client/sweep_order.h"

#include <stdlib.h>
#include <string.h>

/* qsort is not stable, so the row index breaks ties and keeps input order within a group. */
static int by_image_then_index(const void *a, const void *b, void *arg)
{
    const sweep_row *rows = arg;
    size_t ia = *(const size_t *)a, ib = *(const size_t *)b;
    const char *pa = rows[ia].image, *pb = rows[ib].image;
    if (pa != pb) {
        if (!pa) return -1; /* text-only rows first */
        if (!pb) return 1;
        int c = strcmp(pa, pb);
        if (c) return c;
    }
    return ia < ib ? -1 : ia > ib;
}

size_t sweep_order_submission(const sweep_input *in, const sweep_idset *skip, size_t *order)
{
    size_t n = 0;
    for (size_t i = 0; i < in->n_rows; i++)
        if (!skip || !sweep_idset_has(skip, in->rows[i].id)) order[n++] = i;
    qsort_r(order, n, sizeof *order, by_image_then_index, in->rows);
    return n;
}
