// Drives glm4v-gateway with the official openai npm client (pinned in package-lock.json).
//
//   node openai_client.js chat BASE_URL API_KEY IMAGE_FILE PROMPT MAX_TOKENS
//     a greedy image + text chat, non-streaming and streaming, both with logprobs (so the answer's
//     token ids come back as "token_id:<id>" tokens); prints one JSON object with, per mode, the
//     completion id, text, token ids, finish reason and usage.
//   node openai_client.js concurrent BASE_URL API_KEY N MAX_TOKENS
//     N streaming chats at once; prints {"done": k, "failed": [...], "ms": t}.
'use strict';
const fs = require('fs');
const OpenAI = require('openai');

const MODEL = 'glm-4v-9b';

function idsOf(logprobs) {
  return (logprobs && logprobs.content ? logprobs.content : []).map((t) => {
    const m = /^token_id:(-?\d+)$/.exec(t.token);
    if (!m) throw new Error(`unexpected token name ${t.token}`);
    return Number(m[1]);
  });
}

function imageMessages(image, prompt) {
  const b64 = fs.readFileSync(image).toString('base64');
  return [{
    role: 'user',
    content: [
      { type: 'text', text: prompt },
      { type: 'image_url', image_url: { url: `data:image/png;base64,${b64}` } },
    ],
  }];
}

async function chat(client, image, prompt, maxTokens) {
  const messages = imageMessages(image, prompt);
  // ignore_eos (vLLM's extension, passed through by the client): a long answer from the tiny model
  const base = { model: MODEL, messages, temperature: 0, max_tokens: maxTokens, ignore_eos: true };

  const whole = await client.chat.completions.create({ ...base, logprobs: true });
  const c = whole.choices[0];
  const nonstream = {
    id: whole.id, text: c.message.content, ids: idsOf(c.logprobs),
    finish_reason: c.finish_reason, usage: whole.usage,
  };

  const stream = await client.chat.completions.create({
    ...base, logprobs: true, stream: true, stream_options: { include_usage: true },
  });
  const s = { id: null, text: '', ids: [], finish_reason: null, usage: null, events: 0 };
  for await (const ev of stream) {
    s.events++;
    s.id = ev.id;
    if (ev.usage) s.usage = ev.usage;
    for (const ch of ev.choices) {
      if (ch.delta && typeof ch.delta.content === 'string') s.text += ch.delta.content;
      s.ids.push(...idsOf(ch.logprobs));
      if (ch.finish_reason) s.finish_reason = ch.finish_reason;
    }
  }
  // the same request without logprobs: the text alone
  const plain = await client.chat.completions.create(base);
  return { nonstream, stream: s, plain_id: plain.id, plain_text: plain.choices[0].message.content };
}

async function concurrent(client, n, maxTokens) {
  const t0 = Date.now();
  const one = async (i) => {
    const stream = await client.chat.completions.create({
      model: MODEL, temperature: 0, max_tokens: maxTokens, stream: true,
      messages: [{ role: 'user', content: `Request number ${i}: say something.` }],
    });
    let finish = null;
    for await (const ev of stream) {
      for (const ch of ev.choices) if (ch.finish_reason) finish = ch.finish_reason;
    }
    if (!finish) throw new Error('stream ended without a finish_reason');
  };
  const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => one(i)));
  const failed = results.filter((r) => r.status === 'rejected').map((r) => String(r.reason));
  return { done: n - failed.length, failed: failed.slice(0, 5), ms: Date.now() - t0 };
}

async function main() {
  const [mode, baseURL, apiKey, ...rest] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });
  let out;
  if (mode === 'chat') out = await chat(client, rest[0], rest[1], Number(rest[2]));
  else if (mode === 'concurrent') out = await concurrent(client, Number(rest[0]), Number(rest[1]));
  else throw new Error(`unknown mode ${mode}`);
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`openai_client: ${e.stack || e}\n`);
  process.exit(1);
});
