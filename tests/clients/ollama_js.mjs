// The `ollama` npm package (ollama-js) streaming a chat, run inside the sandbox.
// Talks to OLLAMA_HOST (set by `bridge-guest run`) and prints one JSON object.
let Ollama;
try {
  ({ Ollama } = await import('ollama'));
} catch (e) {
  console.error('the `ollama` npm package is missing: run the tests with ./scripts/test (it runs npm ci in tests/clients)');
  process.exit(1);
}
const client = new Ollama({ host: process.env.OLLAMA_HOST });
const stream = await client.chat({
  model: 'qwen2.5:7b',
  messages: [{ role: 'user', content: 'stream from node' }],
  stream: true,
});
let text = '';
let chunks = 0;
let done = false;
for await (const part of stream) {
  chunks += 1;
  text += part.message.content;
  done = part.done;
}
console.log(JSON.stringify({ chunks, text, done }));
