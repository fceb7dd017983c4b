/* Results and Chunks in OpenAI's shapes: the chat.completion object of a non-streaming answer and
 * the chat.completion.chunk objects of a stream (each framed as one server-sent event).
 *
 * Token strings: the gateway holds no tokenizer, so a logprobs entry names its token as
 * "token_id:<id>" (the convention of vLLM's return_tokens_as_token_ids) with bytes null. */
#ifndef GLM4V_GW_OPENAI_H
#define GLM4V_GW_OPENAI_H

#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct gw_answer_meta {
    const char *completion_id; /* "chatcmpl-<job id>" */
    const char *model;
    long long created; /* unix seconds */
    bool logprobs;     /* the request asked for logprobs */
    int top_logprobs;
} gw_answer_meta;

/* "stop" (EOS, stop ids, stop strings) or "length". */
const char *gw_finish_reason(glm_finish_reason r);

/* The whole chat.completion object for a successful Result (malloc'd JSON). */
char *gw_completion_json(const gw_answer_meta *m, const glm_result *r);

/* One SSE event "data: {chat.completion.chunk}\n\n" (malloc'd). role_first: the first event,
 * which carries delta.role. text may be NULL (no content key); lp/n_lp the logprobs of the
 * tokens this event carries (n_lp 0: "logprobs": null); finish NULL while streaming;
 * with_usage_null: "usage": null, as OpenAI sends with stream_options.include_usage. */
char *gw_chunk_event(const gw_answer_meta *m, bool role_first, const char *text, size_t text_len,
                     const glm_token_logprobs *lp, size_t n_lp, const char *finish,
                     bool with_usage_null);

/* The final usage-only event of stream_options.include_usage (choices empty). */
char *gw_usage_event(const gw_answer_meta *m, const glm_usage *u);

/* "data: {"error":{...}}\n\n" from an error object's JSON. */
char *gw_error_event(const char *error_json);

#endif
