/* Token sampling of the CPU backend, and the counter-based random draw every backend must
 * reproduce so that a request's tokens depend only on (seed, step, logits), never on which other
 * requests share its batch or on the backend. */
#ifndef GLM4V_CPU_SAMPLE_H
#define GLM4V_CPU_SAMPLE_H

#include <stdint.h>

#include "kernels/ops.h"

#include "kernels/sample_rng.h"

#endif
