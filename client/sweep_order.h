/* glm4v-sweep submission order: rows that share an image are submitted one after the other, so
 * they reach a server close together and all but the first reuse its vision-cache entry (often in
 * the same batch). Output order is the writer's business (sweep_output.h), not this one's. */
#ifndef GLM4V_SWEEP_ORDER_H
#define GLM4V_SWEEP_ORDER_H

#include "client/sweep_input.h"

#include <stddef.h>

/* Fills order (room for in->n_rows) with the indexes of the rows whose id is not in skip: text-only
 * rows first, then rows grouped by image path (byte order), input order kept within a group.
 * Returns how many it wrote. */
size_t sweep_order_submission(const sweep_input *in, const sweep_idset *skip, size_t *order);

#endif
