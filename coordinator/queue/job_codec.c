/* Job bytes <-> glm_job, and the tokenizer-free checks on a decoded Job. Chunk and Result live in
 * result_codec.c. */
#include "coordinator/queue/job_codec.h"

#include "proto/glm4v.pb-c.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *glm_role_name(glm_role role)
{
    switch (role) {
    case GLM_ROLE_SYSTEM:
        return "system";
    case GLM_ROLE_USER:
        return "user";
    case GLM_ROLE_ASSISTANT:
        return "assistant";
    case GLM_ROLE_OBSERVATION:
        return "observation";
    default:
        return "unspecified";
    }
}

const char *glm_finish_reason_name(glm_finish_reason r)
{
    switch (r) {
    case GLM_FINISH_STOP:
        return "stop";
    case GLM_FINISH_LENGTH:
        return "length";
    case GLM_FINISH_STOP_STRING:
        return "stop_string";
    case GLM_FINISH_ERROR:
        return "error";
    case GLM_FINISH_ABORTED:
        return "aborted";
    default:
        return "unspecified";
    }
}

const char *glm_error_code_name(glm_error_code code)
{
    static const char *const names[] = {
        "OK",
        "INVALID_REQUEST",
        "PROMPT_TOO_LONG",
        "BAD_IMAGE",
        "UNSUPPORTED_IMAGE",
        "IMAGE_TOO_LARGE",
        "BAD_SAMPLING",
        "MALFORMED_JOB",
        "UNKNOWN_FIELD",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "POISON",
        "EMPTY_PROMPT",
        "UNSUPPORTED_VERSION",
        "TOO_MANY_IMAGES",
        "ID_CONFLICT",
        "CANCELLED",
        "REDIS_REFUSED",
    };
    if ((unsigned)code < sizeof names / sizeof names[0]) return names[code];
    return "UNKNOWN_ERROR_CODE";
}

glm_sampling glm_sampling_defaults(void)
{
    glm_sampling s;
    memset(&s, 0, sizeof s);
    s.temperature = 1.0f;
    s.top_p = 1.0f;
    return s;
}

glm_job_limits glm_job_limits_default(void)
{
    glm_job_limits l = {
        .max_messages = 64,
        .max_content_bytes = 1u << 20,
        .max_image_bytes = 20u << 20,
        .max_images = 4,
        .max_new_tokens = 8192,
        .max_stop = 16,
        .max_stop_bytes = 256,
        .max_stop_ids = 64,
        .vocab_size = 151552,
        .max_logprobs = 20,
    };
    return l;
}

/* Fills problem (which may be NULL) and returns status, like glm_fail for protocol errors. */
static glm_status refuse(glm_job_problem *problem, glm_status status, glm_error_code code,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static glm_status refuse(glm_job_problem *problem, glm_status status, glm_error_code code,
                         const char *fmt, ...)
{
    if (problem) {
        problem->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(problem->message, sizeof problem->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

bool glm_job_id_valid(const char *id)
{
    if (!id) return false;
    size_t n = strlen(id);
    if (n == 0 || n > GLM_JOB_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("._:@/-", c) != NULL;
        if (!ok) return false;
    }
    return true;
}

/* Finds the first unknown field anywhere in m. protobuf-c keeps fields it does not know in
 * base.unknown_fields instead of dropping them; we walk every sub-message through the descriptor so
 * a field added inside SamplingParams by a newer client is caught as well as one at the top. */
static bool find_unknown_field(const ProtobufCMessage *m, char *path, size_t cap, uint32_t *tag)
{
    if (m->n_unknown_fields > 0) {
        *tag = m->unknown_fields[0].tag;
        snprintf(path, cap, "%s", m->descriptor->short_name);
        return true;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        const char *base = (const char *)m;
        size_t n = 1;
        const ProtobufCMessage *const *subs = (const ProtobufCMessage *const *)(base + f->offset);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            subs = *(const ProtobufCMessage *const *const *)(base + f->offset);
        }
        for (size_t k = 0; k < n; k++) {
            if (subs[k] && find_unknown_field(subs[k], path, cap, tag)) return true;
        }
    }
    return false;
}

glm_status glm_job_decode(const void *bytes, size_t len, glm_job **out, glm_job_problem *problem)
{
    *out = NULL;
    if (problem) memset(problem, 0, sizeof *problem);
    Glm4v__Job *pb = glm4v__job__unpack(NULL, len, bytes);
    if (!pb)
        return refuse(problem, GLM_ERR_FORMAT, GLM_EC_MALFORMED_JOB,
                      "job bytes (%zu) do not parse as glm4v.Job", len);
    if (problem && glm_job_id_valid(pb->id))
        snprintf(problem->job_id, sizeof problem->job_id, "%s", pb->id);

    char path[64];
    uint32_t tag = 0;
    glm_status st = GLM_OK;
    if (find_unknown_field(&pb->base, path, sizeof path, &tag)) {
        st = refuse(problem, GLM_ERR_FORMAT, GLM_EC_UNKNOWN_FIELD,
                    "unknown field number %u in %s (client newer than server?)", tag, path);
    } else if (!pb->has_version || pb->version < 1 || pb->version > GLM4V_PROTOCOL_VERSION) {
        st = refuse(problem, GLM_ERR_UNSUPPORTED, GLM_EC_UNSUPPORTED_VERSION,
                    "job version %u, this server speaks 1..%u", pb->has_version ? pb->version : 0,
                    GLM4V_PROTOCOL_VERSION);
    }
    size_t n_more = 0;
    for (size_t i = 0; st == GLM_OK && i < pb->n_messages; i++)
        n_more += pb->messages[i]->n_more_images;
    glm_job *job = st == GLM_OK ? calloc(1, sizeof *job) : NULL;
    /* one block: the messages, then every message's more_images parts */
    glm_message *msgs =
        st == GLM_OK
            ? calloc(1, (pb->n_messages + 1) * sizeof *msgs + n_more * sizeof(glm_image_part))
            : NULL;
    if (st == GLM_OK && (!job || !msgs))
        st = refuse(problem, GLM_ERR_NOMEM, GLM_EC_INTERNAL, "out of memory decoding job");
    if (st != GLM_OK) {
        free(job);
        free(msgs);
        glm4v__job__free_unpacked(pb, NULL);
        return st;
    }
    glm_image_part *parts = (glm_image_part *)(msgs + pb->n_messages + 1);

    job->version = pb->version;
    job->id = pb->id ? pb->id : "";
    for (size_t i = 0; i < pb->n_messages; i++) {
        const Glm4v__Message *m = pb->messages[i];
        msgs[i].role = m->has_role ? (glm_role)m->role : GLM_ROLE_UNSPECIFIED;
        msgs[i].content = m->content ? m->content : "";
        msgs[i].image_format = "";
        if (m->image) {
            /* A present ImageInput without data still counts as an image (an empty one). */
            msgs[i].image = m->image->has_data && m->image->data.data ? m->image->data.data
                                                                      : (const uint8_t *)"";
            msgs[i].image_bytes = m->image->has_data ? m->image->data.len : 0;
            if (m->image->format) msgs[i].image_format = m->image->format;
        }
        msgs[i].more_images = parts;
        msgs[i].n_more_images = m->n_more_images;
        for (size_t k = 0; k < m->n_more_images; k++, parts++) {
            const Glm4v__ImageInput *in = m->more_images[k];
            parts->data = in->has_data && in->data.data ? in->data.data : (const uint8_t *)"";
            parts->bytes = in->has_data ? in->data.len : 0;
            parts->format = in->format ? in->format : "";
        }
    }
    job->messages = msgs;
    job->n_messages = pb->n_messages;
    job->sampling = glm_sampling_defaults();
    const Glm4v__SamplingParams *sp = pb->sampling;
    if (sp) {
        glm_sampling *s = &job->sampling;
        if (sp->has_max_new_tokens) s->max_new_tokens = sp->max_new_tokens;
        if (sp->has_temperature) s->temperature = sp->temperature;
        if (sp->has_top_p) s->top_p = sp->top_p;
        if (sp->has_top_k) s->top_k = sp->top_k;
        s->has_seed = sp->has_seed;
        s->seed = sp->seed;
        s->stop = (const char *const *)sp->stop;
        s->n_stop = sp->n_stop;
        s->stop_ids = sp->stop_ids;
        s->n_stop_ids = sp->n_stop_ids;
        s->has_logprobs = sp->has_logprobs;
        s->logprobs = sp->logprobs;
        s->ignore_eos = sp->has_ignore_eos && sp->ignore_eos;
    }
    job->priority = pb->has_priority ? pb->priority : 0;
    job->deadline_unix_ms = pb->has_deadline_unix_ms ? pb->deadline_unix_ms : 0;
    job->owner = pb;
    *out = job;
    return GLM_OK;
}

void glm_job_free(glm_job *job)
{
    if (!job) return;
    if (job->owner) glm4v__job__free_unpacked((Glm4v__Job *)job->owner, NULL);
    free((void *)job->messages);
    free(job);
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, n;
        uint32_t cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07;
        } else {
            return false;
        }
        for (unsigned k = 1; k <= n; k++) {
            if ((p[k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[k] & 0x3F);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        p += n + 1;
    }
    return true;
}

static glm_status validate_sampling(const glm_sampling *s, const glm_job_limits *lim,
                                    glm_job_problem *pr)
{
    const glm_status bad = GLM_ERR_INVALID_ARG;
    const glm_error_code ec = GLM_EC_BAD_SAMPLING;
    if (s->max_new_tokens > lim->max_new_tokens)
        return refuse(pr, bad, ec, "max_new_tokens %u > limit %u", s->max_new_tokens,
                      lim->max_new_tokens);
    if (!isfinite(s->temperature) || s->temperature < 0.0f || s->temperature > 100.0f)
        return refuse(pr, bad, ec, "temperature %g outside [0, 100]", (double)s->temperature);
    if (!isfinite(s->top_p) || s->top_p <= 0.0f || s->top_p > 1.0f)
        return refuse(pr, bad, ec, "top_p %g outside (0, 1]", (double)s->top_p);
    if (s->top_k > (uint32_t)lim->vocab_size)
        return refuse(pr, bad, ec, "top_k %u > vocabulary size %d", s->top_k, lim->vocab_size);
    if (s->has_logprobs && s->logprobs > lim->max_logprobs)
        return refuse(pr, bad, ec, "logprobs %u > limit %u", s->logprobs, lim->max_logprobs);
    if (s->n_stop > lim->max_stop)
        return refuse(pr, bad, ec, "%zu stop strings > limit %zu", s->n_stop, lim->max_stop);
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t n = s->stop[i] ? strlen(s->stop[i]) : 0;
        if (n == 0 || n > lim->max_stop_bytes)
            return refuse(pr, bad, ec, "stop string %zu has %zu bytes (1..%zu allowed)", i, n,
                          lim->max_stop_bytes);
        if (!utf8_valid(s->stop[i]))
            return refuse(pr, bad, ec, "stop string %zu is not valid UTF-8", i);
    }
    if (s->n_stop_ids > lim->max_stop_ids)
        return refuse(pr, bad, ec, "%zu stop ids > limit %zu", s->n_stop_ids, lim->max_stop_ids);
    for (size_t i = 0; i < s->n_stop_ids; i++) {
        if (s->stop_ids[i] < 0 || s->stop_ids[i] >= lim->vocab_size)
            return refuse(pr, bad, ec, "stop id %d outside [0, %d)", s->stop_ids[i],
                          lim->vocab_size);
    }
    return GLM_OK;
}

glm_status glm_job_validate(const glm_job *job, const glm_job_limits *limits, glm_job_problem *pr)
{
    glm_job_limits defaults = glm_job_limits_default();
    const glm_job_limits *lim = limits ? limits : &defaults;
    const glm_status bad = GLM_ERR_INVALID_ARG;
    if (pr) {
        memset(pr, 0, sizeof *pr);
        if (glm_job_id_valid(job->id)) snprintf(pr->job_id, sizeof pr->job_id, "%s", job->id);
    }
    if (!glm_job_id_valid(job->id))
        return refuse(pr, bad, GLM_EC_INVALID_REQUEST,
                      "job id must be 1..%d bytes of [A-Za-z0-9._:@/-]", GLM_JOB_ID_MAX);
    if (job->n_messages == 0) return refuse(pr, bad, GLM_EC_EMPTY_PROMPT, "job has no messages");
    if (job->n_messages > lim->max_messages)
        return refuse(pr, GLM_ERR_LIMIT, GLM_EC_INVALID_REQUEST, "%zu messages > limit %zu",
                      job->n_messages, lim->max_messages);
    size_t n_images = 0, n_nonempty = 0;
    for (size_t i = 0; i < job->n_messages; i++) {
        const glm_message *m = &job->messages[i];
        if (m->role < GLM_ROLE_SYSTEM || m->role > GLM_ROLE_OBSERVATION)
            return refuse(pr, bad, GLM_EC_INVALID_REQUEST, "message %zu has role %d", i,
                          (int)m->role);
        const char *content = m->content ? m->content : "";
        size_t n = strlen(content);
        if (n > lim->max_content_bytes)
            return refuse(pr, GLM_ERR_LIMIT, GLM_EC_PROMPT_TOO_LONG,
                          "message %zu has %zu bytes > limit %zu", i, n, lim->max_content_bytes);
        if (!utf8_valid(content))
            return refuse(pr, bad, GLM_EC_INVALID_REQUEST, "message %zu is not valid UTF-8", i);
        if (n > 0 || m->image) n_nonempty++;
        if (!m->image) {
            if (m->n_more_images > 0)
                return refuse(pr, bad, GLM_EC_INVALID_REQUEST,
                              "message %zu has more_images but no image", i);
            continue;
        }
        if (m->role != GLM_ROLE_USER)
            return refuse(pr, bad, GLM_EC_INVALID_REQUEST, "image in a %s message (user only)",
                          glm_role_name(m->role));
        /* images are numbered 1, 2, ... across the job in prompt order, as errors name them */
        for (size_t k = 0; k < glm_message_n_images(m); k++) {
            glm_image_part im = glm_message_image(m, k);
            n_images++;
            if (im.bytes == 0)
                return refuse(pr, GLM_ERR_FORMAT, GLM_EC_BAD_IMAGE,
                              "image %zu (message %zu) is empty", n_images, i);
            if (im.bytes > lim->max_image_bytes)
                return refuse(pr, GLM_ERR_LIMIT, GLM_EC_IMAGE_TOO_LARGE,
                              "image %zu (message %zu) of %zu bytes > limit %zu", n_images, i,
                              im.bytes, lim->max_image_bytes);
        }
    }
    if (n_images > lim->max_images)
        return refuse(pr, GLM_ERR_LIMIT, GLM_EC_TOO_MANY_IMAGES,
                      "%zu images > this server's limit of %zu per prompt", n_images,
                      lim->max_images);
    if (n_nonempty == 0) return refuse(pr, bad, GLM_EC_EMPTY_PROMPT, "every message is empty");
    return validate_sampling(&job->sampling, lim, pr);
}

/* Serializes any protobuf-c message into a new malloc'd buffer. */
glm_status glm_pack_message(const ProtobufCMessage *m, uint8_t **bytes, size_t *len,
                            glm_error *err);
glm_status glm_pack_message(const ProtobufCMessage *m, uint8_t **bytes, size_t *len, glm_error *err)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return glm_fail(err, GLM_ERR_NOMEM, "packing %s: %zu bytes", m->descriptor->name, n);
    size_t written = protobuf_c_message_pack(m, buf);
    if (written != n) {
        free(buf);
        return glm_fail(err, GLM_ERR_FORMAT, "packing %s: wrote %zu of %zu bytes",
                        m->descriptor->name, written, n);
    }
    *bytes = buf;
    *len = n;
    return GLM_OK;
}

size_t glm_message_n_images(const glm_message *m)
{
    return m->image ? 1 + m->n_more_images : 0;
}

glm_image_part glm_message_image(const glm_message *m, size_t k)
{
    if (k == 0)
        return (glm_image_part){.data = m->image,
                                .bytes = m->image_bytes,
                                .format = m->image_format ? m->image_format : ""};
    glm_image_part p = m->more_images[k - 1];
    if (!p.format) p.format = "";
    return p;
}

static void image_input_of(Glm4v__ImageInput *out, glm_image_part part)
{
    glm4v__image_input__init(out);
    out->has_data = 1;
    out->data.data = (uint8_t *)part.data;
    out->data.len = part.bytes;
    if (part.format && *part.format) out->format = (char *)part.format;
}

glm_status glm_job_encode(const glm_job *job, uint8_t **bytes, size_t *len, glm_error *err)
{
    size_t nm = job->n_messages, n_more = 0;
    for (size_t i = 0; i < nm; i++)
        if (job->messages[i].image) n_more += job->messages[i].n_more_images;
    Glm4v__Message *msgs = calloc(nm + 1, sizeof *msgs);
    Glm4v__Message **msg_ptrs = calloc(nm + 1, sizeof *msg_ptrs);
    Glm4v__ImageInput *images = calloc(nm + 1, sizeof *images);
    Glm4v__ImageInput *more = calloc(n_more + 1, sizeof *more);
    Glm4v__ImageInput **more_ptrs = calloc(n_more + 1, sizeof *more_ptrs);
    if (!msgs || !msg_ptrs || !images || !more || !more_ptrs) {
        free(msgs);
        free(msg_ptrs);
        free(images);
        free(more);
        free(more_ptrs);
        return glm_fail(err, GLM_ERR_NOMEM, "encoding job %s", job->id ? job->id : "");
    }
    size_t used = 0;
    for (size_t i = 0; i < nm; i++) {
        const glm_message *m = &job->messages[i];
        glm4v__message__init(&msgs[i]);
        msgs[i].has_role = 1;
        msgs[i].role = (Glm4v__Role)m->role;
        msgs[i].content = (char *)(m->content ? m->content : "");
        if (m->image) {
            image_input_of(&images[i], glm_message_image(m, 0));
            msgs[i].image = &images[i];
            msgs[i].n_more_images = m->n_more_images;
            msgs[i].more_images = m->n_more_images ? more_ptrs + used : NULL;
            for (size_t k = 1; k <= m->n_more_images; k++, used++) {
                image_input_of(&more[used], glm_message_image(m, k));
                more_ptrs[used] = &more[used];
            }
        }
        msg_ptrs[i] = &msgs[i];
    }
    const glm_sampling *s = &job->sampling;
    Glm4v__SamplingParams sp;
    glm4v__sampling_params__init(&sp);
    sp.has_max_new_tokens = s->max_new_tokens != 0;
    sp.max_new_tokens = s->max_new_tokens;
    sp.has_temperature = 1;
    sp.temperature = s->temperature;
    sp.has_top_p = 1;
    sp.top_p = s->top_p;
    sp.has_top_k = s->top_k != 0;
    sp.top_k = s->top_k;
    sp.has_seed = s->has_seed;
    sp.seed = s->seed;
    sp.n_stop = s->n_stop;
    sp.stop = (char **)s->stop;
    sp.n_stop_ids = s->n_stop_ids;
    sp.stop_ids = (int32_t *)s->stop_ids;
    sp.has_logprobs = s->has_logprobs;
    sp.logprobs = s->logprobs;
    sp.has_ignore_eos = s->ignore_eos;
    sp.ignore_eos = s->ignore_eos;

    Glm4v__Job pb;
    glm4v__job__init(&pb);
    pb.has_version = 1;
    pb.version = job->version ? job->version : GLM4V_PROTOCOL_VERSION;
    pb.id = (char *)(job->id ? job->id : "");
    pb.n_messages = nm;
    pb.messages = msg_ptrs;
    pb.sampling = &sp;
    pb.has_priority = job->priority != 0;
    pb.priority = job->priority;
    pb.has_deadline_unix_ms = job->deadline_unix_ms != 0;
    pb.deadline_unix_ms = job->deadline_unix_ms;
    glm_status st = glm_pack_message(&pb.base, bytes, len, err);
    free(msgs);
    free(msg_ptrs);
    free(images);
    free(more);
    free(more_ptrs);
    return st;
}
