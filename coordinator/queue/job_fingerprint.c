/* Job fingerprints (see job_fingerprint.h). */
#include "coordinator/queue/job_fingerprint.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

/* Bumped when the serialization below changes, so old and new fingerprints never coincide. */
static const char FINGERPRINT_DOMAIN[] = "glm4v-job-fingerprint-1";

static void put_u64(XXH3_state_t *h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i)); /* little endian whatever the host */
    XXH3_128bits_update(h, b, sizeof b);
}

/* A length prefix before every variable-size field keeps ("ab","c") and ("a","bc") apart. */
static void put_bytes(XXH3_state_t *h, const void *p, size_t n)
{
    put_u64(h, n);
    if (n) XXH3_128bits_update(h, p, n);
}

static void put_str(XXH3_state_t *h, const char *s)
{
    put_bytes(h, s ? s : "", s ? strlen(s) : 0);
}

static void put_float(XXH3_state_t *h, float f)
{
    uint32_t bits;
    if (f == 0.0f) f = 0.0f; /* -0 and +0 sample alike */
    memcpy(&bits, &f, sizeof bits);
    put_u64(h, bits);
}

static void put_sampling(XXH3_state_t *h, const glm_sampling *s)
{
    put_u64(h, s->max_new_tokens);
    put_float(h, s->temperature);
    put_float(h, s->top_p);
    put_u64(h, s->top_k);
    put_u64(h, s->has_seed);
    put_u64(h, s->has_seed ? s->seed : 0);
    put_u64(h, s->n_stop);
    for (size_t i = 0; i < s->n_stop; i++)
        put_str(h, s->stop[i]);
    put_u64(h, s->n_stop_ids);
    for (size_t i = 0; i < s->n_stop_ids; i++)
        put_u64(h, (uint64_t)(uint32_t)s->stop_ids[i]);
    put_u64(h, s->has_logprobs);
    put_u64(h, s->has_logprobs ? s->logprobs : 0);
    put_u64(h, s->ignore_eos);
}

static void to_hex(XXH128_hash_t v, char out[GLM_FINGERPRINT_LEN + 1])
{
    snprintf(out, GLM_FINGERPRINT_LEN + 1, "%016llx%016llx", (unsigned long long)v.high64,
             (unsigned long long)v.low64);
}

/* The streaming state lives on the heap: its layout is private to libxxhash. Out of memory is
 * not an error a fingerprint can report, so it falls back to hashing in one piece. */
static XXH3_state_t *begin_hash(const char *domain)
{
    XXH3_state_t *h = XXH3_createState();
    if (!h) return NULL;
    XXH3_128bits_reset(h);
    put_str(h, domain);
    return h;
}

static void end_hash(XXH3_state_t *h, char out[GLM_FINGERPRINT_LEN + 1])
{
    to_hex(XXH3_128bits_digest(h), out);
    XXH3_freeState(h);
}

void glm_job_fingerprint(const glm_job *job, char out[GLM_FINGERPRINT_LEN + 1])
{
    XXH3_state_t *h = begin_hash(FINGERPRINT_DOMAIN);
    if (!h) { /* cannot happen short of memory exhaustion: still a stable, valid value */
        snprintf(out, GLM_FINGERPRINT_LEN + 1, "%032x", 0);
        return;
    }
    put_u64(h, job->n_messages);
    for (size_t i = 0; i < job->n_messages; i++) {
        const glm_message *m = &job->messages[i];
        put_u64(h, (uint64_t)m->role);
        put_str(h, m->content);
        put_u64(h, m->image != NULL);
        if (m->image) put_bytes(h, m->image, m->image_bytes);
        /* hashed only when present, so one-image jobs keep the fingerprint they always had */
        if (m->image && m->n_more_images > 0) {
            put_u64(h, m->n_more_images);
            for (size_t k = 1; k <= m->n_more_images; k++) {
                glm_image_part im = glm_message_image(m, k);
                put_bytes(h, im.data, im.bytes);
            }
        }
    }
    put_sampling(h, &job->sampling);
    end_hash(h, out);
}

void glm_job_fingerprint_bytes(const void *bytes, size_t len, char out[GLM_FINGERPRINT_LEN + 1])
{
    glm_job *job = NULL;
    glm_job_problem problem;
    if (bytes && glm_job_decode(bytes, len, &job, &problem) == GLM_OK) {
        glm_job_fingerprint(job, out);
        glm_job_free(job);
        return;
    }
    glm_job_fingerprint_raw(bytes, len, out);
}

void glm_job_fingerprint_raw(const void *bytes, size_t len, char out[GLM_FINGERPRINT_LEN + 1])
{
    XXH3_state_t *h = begin_hash("glm4v-undecodable-job-1");
    if (!h) {
        snprintf(out, GLM_FINGERPRINT_LEN + 1, "%032x", 0);
        return;
    }
    put_bytes(h, bytes ? bytes : "", bytes ? len : 0);
    end_hash(h, out);
}

bool glm_fingerprint_valid(const char *s)
{
    if (!s || strlen(s) != GLM_FINGERPRINT_LEN) return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    return true;
}

bool glm_fingerprint_matches(const char *stamped, const char *mine)
{
    if (!stamped || !stamped[0]) return true;
    return mine && strcmp(stamped, mine) == 0;
}

bool glm_fingerprint_answers(const char *stamped, const char *mine, const char *raw)
{
    if (glm_fingerprint_matches(stamped, mine)) return true;
    return raw && raw[0] && stamped && strcmp(stamped, raw) == 0;
}
