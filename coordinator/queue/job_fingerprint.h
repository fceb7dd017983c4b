/* A job's fingerprint: what the job asks, independent of how it was encoded or which id it carries.
 *
 * Job ids are chosen by clients, so an id alone cannot tell "the same job again" (a retry, a
 * resumed sweep: answer once) from "another job that happens to reuse the id" (two sweeps with rows
 * "1", "2",
 * ...: must never receive each other's answers). The server computes this fingerprint from every
 * Job it decodes, keeps it beside the job's Result and claim in Redis and stamps it on every Chunk
 * and Result it writes; clients compute it the same way from the Job they submit and compare.
 *
 * Covered: each message's role, content and image bytes (in order), and the sampling as the server
 * reads it (defaults applied). Not covered: the id, version, priority, deadline and the image
 * format hint, which change when or where a job runs but not its answer. Value: XXH3-128 of a
 * length-prefixed serialization, as 32 lowercase hex digits. Not a cryptographic hash: it separates
 * honest mistakes, not a client forging another's fingerprint (anyone who can write the queue can
 * read every answer anyway). */
#ifndef GLM4V_JOB_FINGERPRINT_H
#define GLM4V_JOB_FINGERPRINT_H

#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stddef.h>

#define GLM_FINGERPRINT_LEN 32 /* hex digits; buffers take GLM_FINGERPRINT_LEN + 1 */

/* The fingerprint of a decoded (or hand-filled) job. */
void glm_job_fingerprint(const glm_job *job, char out[GLM_FINGERPRINT_LEN + 1]);

/* The fingerprint of Job bytes as the server computes it: decoded first, so two encodings of the
 * same job agree; bytes that do not decode get a fingerprint of the raw bytes (the job then ends
 * with MALFORMED_JOB, but duplicates of it are still told apart from other jobs). */
void glm_job_fingerprint_bytes(const void *bytes, size_t len, char out[GLM_FINGERPRINT_LEN + 1]);

/* The fingerprint of bytes as such (glm_job_fingerprint_bytes' fallback for bytes that do not
 * decode), whether or not they decode here. */
void glm_job_fingerprint_raw(const void *bytes, size_t len, char out[GLM_FINGERPRINT_LEN + 1]);

/* True when s is a fingerprint (32 lowercase hex digits). */
bool glm_fingerprint_valid(const char *s);

/* True when a Result (or Chunk) stamped with `stamped` may answer a job fingerprinted `mine`:
 * they are equal, or the Result carries none (a server older than fingerprints). */
bool glm_fingerprint_matches(const char *stamped, const char *mine);

/* What a client asks of every Chunk and Result under its job id: glm_fingerprint_matches against
 * its job's fingerprint `mine`, or `stamped` equals `raw`, the raw fingerprint of the bytes it sent
 * (NULL: none). A server older than the client cannot decode a Job carrying a field or version it
 * does not know, answers UNKNOWN_FIELD or UNSUPPORTED_VERSION and stamps that error Result with the
 * raw fingerprint; compared with `mine` alone, the client reported it as an ID_CONFLICT. */
bool glm_fingerprint_answers(const char *stamped, const char *mine, const char *raw);

#endif
