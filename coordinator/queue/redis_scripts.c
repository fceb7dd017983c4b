/* Lua sources of the queue scripts and the EVALSHA helper (see redis_scripts.h). */
#include "coordinator/queue/redis_scripts.h"

#include "coordinator/queue/redis_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char FINISH_LUA[] = "local written = 0\n"
                                 "if redis.call('EXISTS', KEYS[3]) == 0 then\n"
                                 "  redis.call('XADD', KEYS[2], '*', 'result', ARGV[3])\n"
                                 "  redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
                                 "  redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[5])\n"
                                 "  written = 1\n"
                                 "end\n"
                                 "local acked = 0\n"
                                 "if ARGV[2] ~= '' then\n"
                                 "  acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
                                 "  redis.call('XDEL', KEYS[1], ARGV[2])\n"
                                 "end\n"
                                 "return {written, acked}\n";

/* The POISON Result is protobuf glm4v.Result written by hand (proto2 wire format): version=1,
 * id, finish_reason=ERROR(4), error{code=POISON(11), message}, server_id, attempts. Keep the field
 * numbers in step with proto/glm4v.proto; tests decode it with the generated code. */
static const char CLAIM_LUA[] =
    "local function varint(n)\n"
    "  local s = ''\n"
    "  while n >= 128 do s = s .. string.char(n % 128 + 128); n = math.floor(n / 128) end\n"
    "  return s .. string.char(n)\n"
    "end\n"
    "local function field(tag, s) return string.char(tag) .. varint(#s) .. s end\n"
    "local function poison_result(id, deliveries, server, msg)\n"
    "  local err = string.char(0x08) .. varint(11) .. field(0x12, msg)\n"
    "  return string.char(0x08, 1) .. field(0x12, id) .. string.char(0x28, 4) ..\n"
    "         field(0x42, err) .. field(0x4A, server) .. string.char(0x50) .. varint(deliveries)\n"
    "end\n"
    "local group, consumer, prefix = ARGV[1], ARGV[2], ARGV[7]\n"
    "local max = tonumber(ARGV[6])\n"
    "local claimed = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[3], ARGV[4],\n"
    "                           'COUNT', ARGV[5])\n"
    "local out, n_dead = {}, 0\n"
    "for _, e in ipairs(claimed[2]) do\n"
    "  local eid, f = e[1], e[2]\n"
    "  local job, jid = '', ''\n"
    "  if type(f) == 'table' then\n"
    "    for i = 1, #f, 2 do\n"
    "      if f[i] == 'job' then job = f[i + 1] elseif f[i] == 'id' then jid = f[i + 1] end\n"
    "    end\n"
    "  end\n"
    "  if #jid > 128 or not string.match(jid, '^[%w%._:@/%-]+$') then jid = '' end\n"
    "  local p = redis.call('XPENDING', KEYS[1], group, eid, eid, 1)\n"
    "  local deliveries = 1\n"
    "  if p[1] then deliveries = tonumber(p[1][4]) end\n"
    "  local done = jid ~= '' and redis.call('EXISTS', prefix .. ':done:' .. jid) == 1\n"
    "  if type(f) ~= 'table' or done then\n"
    "    redis.call('XACK', KEYS[1], group, eid)\n"
    "    redis.call('XDEL', KEYS[1], eid)\n"
    "  elseif deliveries > max then\n"
    "    local msg = 'delivered ' .. deliveries .. ' times without a result (limit ' .. max ..\n"
    "                '); moved to ' .. KEYS[2]\n"
    "    redis.call('XADD', KEYS[2], '*', 'entry', eid, 'id', jid, 'job', job,\n"
    "               'deliveries', deliveries, 'server', consumer, 'reason', msg)\n"
    "    if jid ~= '' then\n"
    "      local okey = prefix .. ':out:' .. jid\n"
    "      redis.call('XADD', okey, '*', 'result', poison_result(jid, deliveries, consumer, msg))\n"
    "      redis.call('EXPIRE', okey, ARGV[8])\n"
    "      redis.call('SET', prefix .. ':done:' .. jid, eid, 'EX', ARGV[9])\n"
    "    end\n"
    "    redis.call('XACK', KEYS[1], group, eid)\n"
    "    redis.call('XDEL', KEYS[1], eid)\n"
    "    n_dead = n_dead + 1\n"
    "  else\n"
    "    table.insert(out, {eid, jid, job, deliveries})\n"
    "  end\n"
    "end\n"
    "return {claimed[1], n_dead, out}\n";

static const char ACK_IF_DONE_LUA[] = "if redis.call('EXISTS', KEYS[2]) == 1 then\n"
                                      "  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
                                      "  redis.call('XDEL', KEYS[1], ARGV[2])\n"
                                      "  return 1\n"
                                      "end\n"
                                      "return 0\n";

static const char DEAD_LETTER_LUA[] =
    "redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2], 'id', '', 'job', ARGV[3],\n"
    "           'deliveries', 0, 'server', ARGV[5], 'reason', ARGV[4])\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "return 1\n";

static const char *const SCRIPT_SOURCE[GLM_SCRIPT_COUNT] = {FINISH_LUA, CLAIM_LUA, ACK_IF_DONE_LUA,
                                                            DEAD_LETTER_LUA};

/* SCRIPT LOAD; returns 0 on success, -1 with *fail holding the reply (or NULL) otherwise. */
static int load_script(redisContext *c, glm_redis_scripts *s, glm_redis_script_id id,
                       redisReply **fail)
{
    const char *argv[3] = {"SCRIPT", "LOAD", SCRIPT_SOURCE[id]};
    redisReply *r = redisCommandArgv(c, 3, argv, NULL);
    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
        *fail = r;
        return -1;
    }
    memcpy(s->sha[id], r->str, 40);
    s->sha[id][40] = '\0';
    freeReplyObject(r);
    return 0;
}

redisReply *glm_redis_eval(redisContext *c, glm_redis_scripts *s, glm_redis_script_id id,
                           int n_keys, int n_args, const char **args, const size_t *lens)
{
    int argc = 3 + n_args;
    const char **argv = malloc((size_t)argc * sizeof *argv);
    size_t *argl = malloc((size_t)argc * sizeof *argl);
    if (!argv || !argl) {
        free(argv);
        free(argl);
        return NULL;
    }
    char nkeys[16];
    snprintf(nkeys, sizeof nkeys, "%d", n_keys);
    argv[0] = "EVALSHA";
    argv[2] = nkeys;
    argl[0] = 7;
    argl[2] = strlen(nkeys);
    for (int i = 0; i < n_args; i++) {
        argv[3 + i] = args[i];
        argl[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    redisReply *r = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!s->sha[id][0] && load_script(c, s, id, &r) != 0) break;
        argv[1] = s->sha[id];
        argl[1] = 40;
        r = redisCommandArgv(c, argc, argv, argl);
        if (!glm_redis_is_error(r, "NOSCRIPT") || attempt == 1) break;
        freeReplyObject(r);
        r = NULL;
        s->sha[id][0] = '\0';
    }
    free(argv);
    free(argl);
    return r;
}
