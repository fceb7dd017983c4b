/* The coordinator's loop inside glm4v-serve (rank 0): Redis -> requests -> scheduler -> steps on
 * every rank -> sampled tokens -> Chunks and Results. */
#ifndef GLM4V_SERVE_LOOP_H
#define GLM4V_SERVE_LOOP_H

#include <signal.h>

#include "worker/rank_context.h"

typedef struct glm_serve_options {
    const char *redis_url;
    const char *password_file;
    const char *prefix;
    const char *server_id;
    int max_batch;
    int max_tokens_per_step;
    int prefill_chunk;
    int max_images_per_step;
    int max_images_per_prompt; /* images in one job (ERROR_TOO_MANY_IMAGES past it) */
    int default_max_new_tokens;
    int vision_cache;
    bool no_vision_reuse; /* every image through the vision tower (benchmarks) */
    bool no_prefix_cache; /* every prompt computed in full, no KV block reuse (benchmarks) */
    int visibility_timeout_ms;
    int max_deliveries;
    int grace_ms;
    int prep_threads; /* threads preparing requests (decode, tokenize, images) */
    int metrics_port; /* 0: no endpoint */
    const char *metrics_bind;
    const char *crash_on_prompt; /* fault injection for the poison-job test */
} glm_serve_options;

void glm_serve_options_default(glm_serve_options *so);

/* Runs until *stop is set and the drain is over, or a fatal error. */
glm_status glm_serve_run(glm_rank_context *ctx, const glm_rank_options *ro,
                         const glm_serve_options *so, volatile sig_atomic_t *stop, glm_error *err);

#endif
