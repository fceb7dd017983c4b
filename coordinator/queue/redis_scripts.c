/* Lua sources of the queue scripts and the EVALSHA helper (see redis_scripts.h). */
#include "coordinator/queue/redis_scripts.h"

#include "coordinator/queue/redis_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char FINISH_LUA[] =
    "local marker = redis.call('GET', KEYS[3])\n"
    "local written = 0\n"
    "if not marker then\n"
    "  redis.call('XADD', KEYS[2], '*', 'result', ARGV[3])\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "  local fp = ARGV[6]\n"
    "  if fp == '' then fp = '-' end\n"
    "  redis.call('SET', KEYS[3], fp, 'EX', ARGV[5])\n"
    "  written, marker = 1, ''\n"
    "end\n"
    "local claim = redis.call('GET', KEYS[4])\n"
    "if claim and ARGV[2] ~= '' and string.find(claim, ' ' .. ARGV[2] .. ' ', 1, true) then\n"
    "  redis.call('DEL', KEYS[4])\n"
    "end\n"
    "local acked = 0\n"
    "if ARGV[2] ~= '' then\n"
    "  acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "  redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "end\n"
    "return {written, acked, marker}\n";

/* The POISON Result is protobuf glm4v.Result written by hand (proto2 wire format): version=1,
 * id, finish_reason=ERROR(4), error{code=POISON(11), message}, server_id, attempts and, when the
 * job's claim names its fingerprint, job_fingerprint (12). Keep the field numbers in step with
 * proto/glm4v.proto; tests decode it with the generated code. A delivery is numbered 1 at least: a
 * hand-back takes one off the count (HAND_BACK_LUA), which an unblamed claim does not add back. */
static const char CLAIM_LUA[] =
    "local function varint(n)\n"
    "  local s = ''\n"
    "  while n >= 128 do s = s .. string.char(n % 128 + 128); n = math.floor(n / 128) end\n"
    "  return s .. string.char(n)\n"
    "end\n"
    "local function field(tag, s) return string.char(tag) .. varint(#s) .. s end\n"
    "local function poison_result(id, deliveries, server, msg, fp)\n"
    "  local err = string.char(0x08) .. varint(11) .. field(0x12, msg)\n"
    "  local r = string.char(0x08, 1) .. field(0x12, id) .. string.char(0x28, 4) ..\n"
    "         field(0x42, err) .. field(0x4A, server) .. string.char(0x50) .. varint(deliveries)\n"
    "  if fp ~= '' then r = r .. field(0x62, fp) end\n"
    "  return r\n"
    "end\n"
    "local function listed(record, eid)\n"
    "  return string.find(' ' .. record .. ' ', ' ' .. eid .. ' ', 1, true) ~= nil\n"
    "end\n"
    "local group, consumer, prefix = ARGV[1], ARGV[2], ARGV[7]\n"
    "local max, maxlen, cap = tonumber(ARGV[6]), ARGV[10], tonumber(ARGV[11])\n"
    "local pend = redis.call('XPENDING', KEYS[1], group, 'IDLE', ARGV[3], '-', '+', ARGV[5])\n"
    "local out, n_dead, records = {}, 0, {}\n"
    "for _, p in ipairs(pend) do\n"
    "  local eid, owner, count = p[1], p[2], tonumber(p[4])\n"
    "  if records[owner] == nil then\n"
    "    records[owner] = redis.call('GET', prefix .. ':step:' .. owner)\n"
    "  end\n"
    "  local deliveries = count + 1\n"
    "  if records[owner] and not listed(records[owner], eid) then deliveries = count end\n"
    "  if deliveries < 1 then deliveries = 1 end\n"
    "  local claimed = redis.call('XCLAIM', KEYS[1], group, consumer, ARGV[3], eid,\n"
    "                             'RETRYCOUNT', deliveries)\n"
    "  local e = claimed[1]\n"
    "  if e then\n"
    "    local f = e[2]\n"
    "    local job, jid = '', ''\n"
    "    if type(f) == 'table' then\n"
    "      for i = 1, #f, 2 do\n"
    "        if f[i] == 'job' then job = f[i + 1] elseif f[i] == 'id' then jid = f[i + 1] end\n"
    "      end\n"
    "    end\n"
    "    if #jid > 128 or not string.match(jid, '^[%w%._:@/%-]+$') then jid = '' end\n"
    "    local done = jid ~= '' and redis.call('EXISTS', prefix .. ':done:' .. jid) == 1\n"
    "    if type(f) ~= 'table' or done then\n"
    "      redis.call('XACK', KEYS[1], group, eid)\n"
    "      redis.call('XDEL', KEYS[1], eid)\n"
    "    elseif deliveries > max then\n"
    "      local msg = 'delivered ' .. deliveries .. ' times without a result (limit ' .. max ..\n"
    "                  '); moved to ' .. KEYS[2]\n"
    "      local stored, truncated = job, 0\n"
    "      if #job > cap then stored, truncated = string.sub(job, 1, cap), 1 end\n"
    "      redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'entry', eid, 'id', jid,\n"
    "                 'job', stored, 'job_bytes', #job, 'truncated', truncated,\n"
    "                 'deliveries', deliveries, 'server', consumer, 'reason', msg)\n"
    "      if jid ~= '' then\n"
    "        local fp, ckey = '', prefix .. ':claim:' .. jid\n"
    "        local claim = redis.call('GET', ckey)\n"
    "        if claim and string.find(claim, ' ' .. eid .. ' ', 1, true) then\n"
    "          fp = string.match(claim, '^(%x*) ') or ''\n"
    "          redis.call('DEL', ckey)\n"
    "        end\n"
    "        local okey = prefix .. ':out:' .. jid\n"
    "        redis.call('XADD', okey, '*', 'result',\n"
    "                   poison_result(jid, deliveries, consumer, msg, fp))\n"
    "        redis.call('EXPIRE', okey, ARGV[8])\n"
    "        if fp == '' then fp = '-' end\n"
    "        redis.call('SET', prefix .. ':done:' .. jid, fp, 'EX', ARGV[9])\n"
    "      end\n"
    "      redis.call('XACK', KEYS[1], group, eid)\n"
    "      redis.call('XDEL', KEYS[1], eid)\n"
    "      n_dead = n_dead + 1\n"
    "    else\n"
    "      table.insert(out, {eid, jid, job, deliveries})\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {'0-0', n_dead, out}\n";

static const char BEGIN_LUA[] =
    "local function ack()\n"
    "  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "  redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "end\n"
    "local marker = redis.call('GET', KEYS[2])\n"
    "if marker then\n"
    "  ack()\n"
    "  if #marker == 32 and not string.find(marker, '[^0-9a-f]') and marker ~= ARGV[3] then\n"
    "    return {'conflict', marker}\n"
    "  end\n"
    "  return {'done', marker}\n"
    "end\n"
    "local claim = redis.call('GET', KEYS[3])\n"
    "if claim then\n"
    "  local fp, eid, server = string.match(claim, '^(%S*) (%S+) (%S+)$')\n"
    "  if eid and eid ~= ARGV[2] then\n"
    "    ack()\n"
    "    if fp ~= ARGV[3] then return {'conflict', fp} end\n"
    "    return {'joined', server}\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[3], ARGV[3] .. ' ' .. ARGV[2] .. ' ' .. ARGV[4], 'PX', ARGV[5])\n"
    "return {'run', ''}\n";

static const char DEAD_LETTER_LUA[] =
    "local job, truncated, cap = ARGV[3], 0, tonumber(ARGV[7])\n"
    "if #job > cap then job, truncated = string.sub(job, 1, cap), 1 end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'entry', ARGV[2], 'id', '',\n"
    "           'job', job, 'job_bytes', #ARGV[3], 'truncated', truncated, 'deliveries', 0,\n"
    "           'server', ARGV[5], 'reason', ARGV[4])\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "return 1\n";

static const char CHUNK_LUA[] = "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
                                "redis.call('XADD', KEYS[1], '*', 'chunk', ARGV[1])\n"
                                "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
                                "return 1\n";

static const char HAND_BACK_LUA[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)\n"
    "local e = p[1]\n"
    "if not e or e[2] ~= ARGV[2] then return 0 end\n"
    "local count = tonumber(e[4]) - 1\n"
    "if count < 0 then count = 0 end\n"
    "redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4],\n"
    "           'RETRYCOUNT', count, 'JUSTID')\n"
    "return 1\n";

/* The owner is checked inside the script: XCLAIM's min-idle alone cannot tell "still mine" from
 * "reclaimed by another replica a moment ago" (both may have been idle as long). */
static const char TOUCH_LUA[] =
    "local group, me, ttl, out = ARGV[1], ARGV[2], ARGV[3], {}\n"
    "for i = 4, #ARGV, 2 do\n"
    "  local eid, ckey = ARGV[i], ARGV[i + 1]\n"
    "  local e = redis.call('XPENDING', KEYS[1], group, eid, eid, 1)[1]\n"
    "  if e and e[2] == me then\n"
    "    redis.call('XCLAIM', KEYS[1], group, me, 0, eid, 'JUSTID')\n"
    "    if ckey ~= '' then\n"
    "      local claim = redis.call('GET', ckey)\n"
    "      if claim and string.find(claim, ' ' .. eid .. ' ', 1, true) then\n"
    "        redis.call('PEXPIRE', ckey, ttl)\n"
    "      end\n"
    "    end\n"
    "    out[#out + 1] = 1\n"
    "  else\n"
    "    out[#out + 1] = 0\n"
    "  end\n"
    "end\n"
    "return out\n";

static const char *const SCRIPT_SOURCE[GLM_SCRIPT_COUNT] = {
    FINISH_LUA, CLAIM_LUA, BEGIN_LUA, DEAD_LETTER_LUA, CHUNK_LUA, HAND_BACK_LUA, TOUCH_LUA};

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

const char *glm_redis_script_sha(redisContext *c, glm_redis_scripts *s, glm_redis_script_id id)
{
    redisReply *fail = NULL;
    if (!s->sha[id][0] && load_script(c, s, id, &fail) != 0) {
        if (fail) freeReplyObject(fail);
        return NULL;
    }
    return s->sha[id];
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
