"""The `ollama` Python package as an agent uses it, run inside the sandbox.

Talks to OLLAMA_HOST (set by `bridge-guest run`) and prints one JSON object with what it
saw; tests/tests/integration/clients.rs asserts on it.
"""
import json
import sys

try:
    import ollama
except ImportError:
    sys.exit("the `ollama` package is missing: run the tests with ./scripts/test, which installs tests/clients/requirements.txt into tests/clients/.venv")

client = ollama.Client()
out = {}

chunks = list(client.chat(model="qwen2.5:7b",
                          messages=[{"role": "user", "content": "stream me a greeting"}],
                          stream=True))
out["chat_chunks"] = len(chunks)
out["chat_text"] = "".join(c.message.content or "" for c in chunks)
out["chat_done"] = bool(chunks[-1].done)

weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
r = client.chat(model="qwen2.5:7b", messages=[{"role": "user", "content": "weather in Paris?"}], tools=[weather])
out["tool_calls"] = [{"name": c.function.name, "arguments": dict(c.function.arguments)}
                     for c in (r.message.tool_calls or [])]

e = client.embed(model="nomic-embed-text", input=["first text", "second text"])
out["embeddings"] = len(e.embeddings)

out["models"] = sorted(m.model for m in client.list().models)

try:
    client.chat(model="llama3.3:70b", messages=[{"role": "user", "content": "hi"}])
    out["denied"] = None
except ollama.ResponseError as err:
    out["denied"] = {"status": err.status_code, "error": err.error}

print(json.dumps(out))
