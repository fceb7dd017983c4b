/* Plays a glm4v-serve older than the gateway, for test_gateway_review.sh: it waits (up to 10 s) for
 * the first Job on <prefix>:jobs and answers it as a server that cannot decode it (the Job carries
 * a field or a version it does not know) does: an UNKNOWN_FIELD error Result stamped with the
 * fingerprint of the raw Job bytes. A gateway that compared that stamp with its decoded
 * fingerprint alone told its client the id was used by another job (500 ID_CONFLICT).
 * usage: gw_old_server PORT PREFIX (Redis on 127.0.0.1) */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/job_fingerprint.h"

/* The value of field `name` in an XRANGE entry's field list, or NULL. */
static const redisReply *field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (strcmp(fields->element[i]->str, name) == 0) return fields->element[i + 1];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gw_old_server PORT PREFIX\n");
        return 2;
    }
    redisContext *c = redisConnect("127.0.0.1", atoi(argv[1]));
    if (!c || c->err) {
        fprintf(stderr, "gw_old_server: cannot connect to redis\n");
        return 1;
    }
    redisReply *range = NULL;
    for (int tries = 0; tries < 100; tries++) {
        range = redisCommand(c, "XRANGE %s:jobs - + COUNT 1", argv[2]);
        if (range && range->type == REDIS_REPLY_ARRAY && range->elements == 1) break;
        if (range) freeReplyObject(range);
        range = NULL;
        usleep(100 * 1000);
    }
    if (!range) {
        fprintf(stderr, "gw_old_server: no job came\n");
        return 1;
    }
    const redisReply *fields = range->element[0]->element[1];
    const redisReply *job = field(fields, "job"), *id = field(fields, "id");
    if (!job || !id) {
        fprintf(stderr, "gw_old_server: the entry has no job or id field\n");
        return 1;
    }
    char raw[GLM_FINGERPRINT_LEN + 1];
    glm_job_fingerprint_raw(job->str, job->len, raw);
    glm_result r = {.version = 1,
                    .id = id->str,
                    .text = "",
                    .finish_reason = GLM_FINISH_ERROR,
                    .error_code = GLM_EC_UNKNOWN_FIELD,
                    .error_message = "Job field 99 is unknown to this server",
                    .server_id = "old-1",
                    .attempts = 1,
                    .job_fingerprint = raw};
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (glm_result_encode(&r, &bytes, &len, NULL) != GLM_OK) return 1;
    redisReply *x = redisCommand(c, "XADD %s:out:%s * result %b", argv[2], id->str, bytes, len);
    int rc = x && x->type == REDIS_REPLY_STRING ? 0 : 1;
    if (x) freeReplyObject(x);
    x = redisCommand(c, "XDEL %s:jobs %s", argv[2], range->element[0]->element[0]->str);
    if (x) freeReplyObject(x);
    printf("gw_old_server: answered %s with UNKNOWN_FIELD stamped %s\n", id->str, raw);
    free(bytes);
    freeReplyObject(range);
    redisFree(c);
    return rc;
}
