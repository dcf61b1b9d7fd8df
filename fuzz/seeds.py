#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/seeds/<target>/, from hand-picked inputs:
the hostile request fixtures (tests/fixtures/hostile/*.http), requests for every route,
strict-JSON edge cases, model names, and Ollama NDJSON streams as Ollama sends them
them. Run from anywhere: python3 fuzz/seeds.py (it replaces fuzz/seeds/)."""
import hashlib, json, os, re, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "seeds")


def unescape(s):
    s = s.replace("\\r", "\r").replace("\\n", "\n")
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  s.encode("utf-8"))


def fixture(path):
    """A hostile .http fixture as the raw bytes sent (see its README)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    escapes = any(l.strip() == "# escapes: on" for l in lines)
    lines = [l for l in lines if not l.startswith("# ")]
    text = "\n".join(lines)
    head, _, body = text.partition("\n\n")
    if body.endswith("\n"):
        body = body[:-1]
    conv = unescape if escapes else (lambda s: s.encode("utf-8"))
    body_b = conv(body)
    head_b = conv(head).replace(b"Content-Length: auto", b"Content-Length: %d" % len(body_b))
    return b"\r\n".join(head_b.split(b"\n")) + b"\r\n\r\n" + body_b


def request(method, target, body=b""):
    head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n".encode()
    if body:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def write(target, items):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for name, data in items:
        if isinstance(data, str):
            data = data.encode("utf-8")
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:60] or "seed"
        h = hashlib.sha1(data).hexdigest()[:8]
        with open(os.path.join(d, f"{safe}-{h}"), "wb") as f:
            f.write(data)


def http_seeds():
    hostile = os.path.join(ROOT, "tests", "fixtures", "hostile")
    # The oversize fixtures test bridge-host's limits, not the code fuzzed here: seeds
    # stay small (libFuzzer's max_len follows the largest seed).
    items = [(n[:-5], fixture(os.path.join(hostile, n)))
             for n in sorted(os.listdir(hostile)) if n.endswith(".http")]
    items = [(n, b) for n, b in items if len(b) <= 4096]
    chat = json.dumps({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}],
                       "options": {"num_ctx": 4096}}).encode()
    for m, t, b in [
        ("GET", "/", b""), ("HEAD", "/api/version", b""), ("GET", "/api/tags", b""),
        ("GET", "/api/ps", b""), ("POST", "/api/show", b'{"name":"llama3.2:3b"}'),
        ("POST", "/api/chat", chat), ("POST", "/api/generate", b'{"model":"llama3.2","prompt":"x","options":{"NUM_CTX":100}}'),
        ("POST", "/api/embed", b'{"model":"qwen2.5:7b","input":"x"}'),
        ("POST", "/api/embeddings", b'{"Model":"qwen2.5:7b","prompt":"x"}'),
        ("POST", "/v1/chat/completions", b'{"model":"qwen2.5:7b","messages":[],"stream":true}'),
        ("POST", "/v1/completions", b'{"model":"qwen2.5:7b","prompt":"x"}'),
        ("POST", "/v1/embeddings", b'{"model":"qwen2.5:7b","input":"x"}'),
        ("GET", "/v1/models", b""), ("GET", "/v1/models/qwen2.5:7b", b""),
        ("POST", "/v1/responses", b'{"model":"qwen2.5:7b"}'),
        ("POST", "/v1/messages", b'{"model":"qwen2.5:7b"}'),
        ("POST", "/api/pull", b'{"model":"qwen2.5:7b"}'),
        ("POST", "/api/copy", b'{"source":"qwen2.5:7b","destination":"mine:1"}'),
        ("DELETE", "/api/delete", b'{"model":"mine:1"}'),
        ("POST", "/api/blobs/sha256:0123abcd", b"opaque"),
        ("GET", "/api/me", b""), ("POST", "/api/experimental/x", b"{}"),
        ("POST", "http://localhost:11434/api/chat", chat),
        ("POST", "/api/chat#frag", chat), ("POST", "/api/chat?", chat),
        ("POST", "/api/%2e%2e/pull", chat), ("POST", "/api/chat/.", chat),
        ("GET", "*", b""), ("CONNECT", "localhost:11434", b""),
    ]:
        items.append((f"{m}-{t}", request(m, t, b)))
    write("http_request", items)


def json_seeds():
    items = [
        ("plain", '{"model":"qwen2.5:7b","messages":[{"role":"user","content":"hi"}],"stream":false}'),
        ("options", '{"model":"m","options":{"num_ctx":8192,"temperature":0.7,"top_p":0.9}}'),
        ("dup", '{"model":"a","model":"b"}'),
        ("case", '{"model":"a","Model":"b"}'),
        ("nested-case", '{"o":{"num_ctx":1,"NUM_CTX":2}}'),
        ("long-s", '{"stream":true,"\u017ftream":false}'),
        ("kelvin", '{"keep_alive":1,"\u212aeep_alive":2}'),
        ("escaped-key", '{"mod\\u0065l":"x","model":"y"}'),
        ("escaped-fold", '{"\\u017ftream":1}'),
        ("dotless-i", '{"\u0131d":1,"ID":2}'),
        ("dotted-I", '{"\u0130d":1,"id":2}'),
        ("sharp-s", '{"\u00df":1,"SS":2,"ss":3}'),
        ("greek", '{"\u03c3":1,"\u03c2":2,"\u03a3":3}'),
        ("numbers", '{"a":-0,"b":1e308,"c":-1.5e-300,"d":18446744073709551615,"e":-9223372036854775808,"f":0.1,"g":1e-7,"h":123456789012345678901234567890}'),
        ("float-edge", '{"a":2.2250738585072014e-308,"b":4.9e-324,"c":1.7976931348623157e308,"d":0.30000000000000004}'),
        ("overflow", '{"a":1e400}'),
        ("strings", '{"s":"\\ud83d\\ude00 \\u0000 \\" \\\\ \\/ \\b\\f\\n\\r\\t","t":"\u00e4\u4e2d"}'),
        ("lone-surrogate", '{"s":"\\ud800"}'),
        ("empty", ''), ("ws", ' \n\t'), ("array", '[1,2]'), ("scalar", '"x"'),
        ("trailing", '{"a":1} {"b":2}'), ("trailing-ws", '{"a":1}\n'),
        ("deep-63", '{"a":' + "[" * 62 + "]" * 62 + "}"),
        ("deep-64", '{"a":' + "[" * 63 + "]" * 63 + "}"),
        ("deep-100", '{"a":' + "[" * 100 + "]" * 100 + "}"),
        ("tools", json.dumps({"model": "m", "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})),
    ]
    out = [(n, s) for n, s in items]
    out.append(("invalid-utf8", b'{"a":"\xff"}'))
    out.append(("bom", b'\xef\xbb\xbf{"a":1}'))
    write("json_strict", out)


def model_seeds():
    names = ["qwen2.5", "qwen2.5:latest", "qwen2.5:7b", "QWEN2.5:Latest", "library/qwen2.5",
             "registry.ollama.ai/library/qwen2.5:latest", "https://registry.ollama.ai/library/qwen2.5",
             "http://localhost:5000/ns/m:1", " qwen2.5 ", "hf.co/org/m:q4_K_M", "localhost:5000/ns/m",
             "me/m:1b", "x:cloud", "gpt-oss:120b-cloud", "deepseek-cloud", "kimi-k2:1t-CLOUD",
             "llama3.2:3b", "llama3.3:70b", "qwen@sha256:abc", "sha256:0123456789abcdef",
             "qwen2.5@sha256:" + "0" * 64, "", "a/b/c/d", "qwen:", ":7b", "a..b", "-x", "x y",
             "ns.x/m", "m:t:u", "a//b", "/m", "m/", "*", "llama3.2:*", "myorg/*", "?", "m:?b",
             "_m", "m" * 81, "h" * 351 + "/n/m", "\u212a:1", "m\u0131", "x-cloud:latest",
             "cloud", ":cloud", "x:-cloud", "a.b.c", "ns/m:latest-cloud", "http://", "https:/x/y",
             # Source suffixes as Ollama's ParseRef reads them (v0.33.0-rc2).
             "llama3.2:local", "llama3.2:3b:local", "llama3.2: LOCAL", "gpt-oss:120b:cloud",
             "kimi:latest:cloud", "m:cloud:local", "m:7b-cloud:local", "m:cloud-cloud",
             "localhost:local", "localhost:5000/ns/m:local", "m:\t7b-Cloud",
             # Schemes before a host, and no `..` rule.
             "ftp://h/ns/m", "https:///library/m", "x://y://h/ns/m", "https://qwen2.5"]
    write("model_name", [(f"name{i}", n) for i, n in enumerate(names)])


def ndjson_seeds():
    def chunk(content="", done=False, calls=None, extra=None, thinking=None):
        msg = {"role": "assistant", "content": content}
        if thinking is not None:
            msg["thinking"] = thinking
        if calls is not None:
            msg["tool_calls"] = calls
        c = {"model": "qwen2.5:7b", "created_at": "2026-11-20T10:00:00.000000Z", "message": msg, "done": done}
        if done:
            c.update({"done_reason": "stop", "total_duration": 5043500667, "load_duration": 5025959,
                      "prompt_eval_count": 26, "prompt_eval_duration": 325953000,
                      "eval_count": 290, "eval_duration": 4709213000})
        c.update(extra or {})
        return json.dumps(c, separators=(",", ":"))

    weather = {"id": "call_k3j9x0aa", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}
    time_ = {"id": "call_p0q1r2s3", "function": {"index": 1, "name": "get_time", "arguments": {"tz": "UTC"}}}
    noid = {"function": {"index": 0, "name": "f", "arguments": {}}}
    streams = {
        "text": [chunk("Hel"), chunk("lo"), chunk(done=True)],
        "calls-intermediate": [chunk("Let me."), chunk(calls=[weather, time_]), chunk(done=True)],
        "calls-final": [chunk(done=True, calls=[weather])],
        "calls-both-repeat": [chunk(calls=[weather]), chunk(done=True, calls=[weather, time_])],
        "calls-noid": [chunk(calls=[noid, noid]), chunk(done=True, calls=[noid])],
        "calls-args-string": [chunk(done=True, calls=[{"function": {"name": "g", "arguments": "{\"a\":1}"}}])],
        "thinking": [chunk(thinking="hmm"), chunk("ok"), chunk(done=True)],
        "length": [chunk("x"), chunk(done=True, extra={"done_reason": "length"})],
        "error-mid": [chunk("x"), '{"error":"model runner has unexpectedly stopped"}'],
        "error-object": ['{"error":{"message":"boom","type":"api_error"}}'],
        "error-first": ['{"error":"model \'x\' not found"}'],
        "garbage": [chunk("x"), "not json", chunk(done=True)],
        "truncated": [chunk("x"), chunk("y")[:20]],
        "no-final": [chunk("x")],
        "after-done": [chunk(done=True), chunk("ignored"), '{"error":"late"}'],
        "crlf": [chunk("a") + "\r", "", "   ", chunk(done=True) + "\r"],
        "big-counts": [chunk(done=True, extra={"prompt_eval_count": 18446744073709551615, "eval_count": 18446744073709551615})],
        "unicode": [chunk("\u00e4\u4e2d\U0001F600 \\n \"q\""), chunk(done=True)],
        "done-not-bool": [chunk(extra={"done": "true"}), chunk(done=True)],
    }
    items = []
    for name, lines in streams.items():
        body = ("\n".join(lines) + "\n").encode()
        items.append((name, bytes([0x07, 0x00, 0x2a]) + body))
        items.append((name + "-usage-small-limit", bytes([0x05, 0x90, 0x11]) + body))
    items.append(("no-trailing-newline", bytes([0x01, 0x00, 0x00]) + chunk(done=True).encode()))
    items.append(("fail-at-end", bytes([0x13, 0x00, 0x05]) + chunk("x").encode() + b"\n"))

    # /api/generate streams for the legacy completions translator (flag bit 5; bit 6 echo).
    def gen(text="", done=False, extra=None):
        c = {"model": "qwen2.5:7b", "created_at": "2026-11-20T10:00:00.000000Z", "response": text, "done": done}
        if done:
            c.update({"done_reason": "stop", "context": [1, 2, 3], "total_duration": 5043500667,
                      "prompt_eval_count": 26, "eval_count": 290})
        c.update(extra or {})
        return json.dumps(c, separators=(",", ":"))

    generate = {
        "gen-text": [gen("Once"), gen(" upon"), gen(""), gen(done=True)],
        "gen-length": [gen("x"), gen(" y", done=True, extra={"done_reason": "length"})],
        "gen-thinking": [gen(extra={"thinking": "hmm"}), gen("ok"), gen(done=True)],
        "gen-error-mid": [gen("x"), '{"error":"model runner has unexpectedly stopped"}'],
        "gen-no-final": [gen("x")],
        "gen-unicode": [gen("\u00e4\u4e2d\U0001F600 \\n \"q\""), gen(done=True)],
    }
    for name, lines in generate.items():
        body = ("\n".join(lines) + "\n").encode()
        items.append((name, bytes([0x27, 0x00, 0x2a]) + body))
        items.append((name + "-echo-small-limit", bytes([0x65, 0x90, 0x11]) + body))
    load = '{"model":"m","created_at":"2026-11-20T10:00:00Z","response":"","done":true,"done_reason":"load"}'
    items.append(("gen-load-no-newline", bytes([0x61, 0x00, 0x00]) + load.encode()))
    write("ndjson_sse", items)


def salvage_seeds():
    """Model text for the tool-call salvage: each form, and text that is not a call."""
    texts = {
        "bare": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        "fenced": 'Let me check.\n```json\n[{"name": "get_time", "arguments": {"timezone": "UTC"}}]\n```',
        "tagged": '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n</tool_call>',
        "python-tag": '<|python_tag|>{"name": "get_time", "parameters": {}}; {"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}',
        "pythonic": '[get_weather(city="Paris", unit=\'celsius\'), get_time(timezone="UTC")]',
        "unknown-tool": '{"name": "launch", "parameters": {}}',
        "bad-enum": '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "kelvin"}}',
        "python-fence": '```python\nget_weather(city="Paris")\n```',
        "prose": 'Use {braces}, [links](x), `code` and a < b; then {"name": "get_time"} done.',
    }
    items = []
    for name, text in texts.items():
        items.append((name, bytes([7, 5]) + text.encode()))
    write("salvage", items)


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    http_seeds(); json_seeds(); model_seeds(); ndjson_seeds(); salvage_seeds()
    for t in sorted(os.listdir(OUT)):
        print(t, len(os.listdir(os.path.join(OUT, t))))
