#!/usr/bin/env python3
"""Reads a saved server-sent-event stream of glm4v-gateway (curl -N output) and prints one JSON
object: the completion id, the concatenated content, the token ids from the logprobs
("token_id:<id>"), the finish reason, whether an error event and [DONE] came, and the number of
events. usage: stream_check.py FILE"""
import json
import sys

out = {"id": None, "text": "", "ids": [], "finish_reason": None, "error": None, "done": False,
       "events": 0}
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = line.rstrip("\n")
    if not line.startswith("data: "):
        continue
    data = line[6:]
    if data == "[DONE]":
        out["done"] = True
        continue
    ev = json.loads(data)
    out["events"] += 1
    if "error" in ev:
        out["error"] = ev["error"]
        continue
    out["id"] = ev["id"]
    for ch in ev.get("choices", []):
        out["text"] += ch.get("delta", {}).get("content") or ""
        for t in (ch.get("logprobs") or {}).get("content") or []:
            out["ids"].append(int(t["token"].removeprefix("token_id:")))
        if ch.get("finish_reason"):
            out["finish_reason"] = ch["finish_reason"]
print(json.dumps(out))
