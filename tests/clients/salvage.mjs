// The `ollama` npm package (ollama-js) offered tools by a small model that prints its
// calls as text, run inside the sandbox: one streamed chat per form the test double can
// print (it reads `form=NAME` in the prompt), calls collected from every chunk.
// usage: node salvage.mjs MODEL — prints {FORM: {"content", "calls": [{"name", "arguments"}]}}.
let Ollama;
try {
  ({ Ollama } = await import('ollama'));
} catch (e) {
  console.error('the `ollama` npm package is missing: (cd tests/clients && npm ci)');
  process.exit(1);
}
const model = process.argv[2];
const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'Current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
  { type: 'function', function: { name: 'get_time', description: 'Current time in a timezone',
    parameters: { type: 'object', properties: { timezone: { type: 'string', enum: ['UTC', 'CET'] } },
      required: ['timezone'] } } },
];
const client = new Ollama({ host: process.env.OLLAMA_HOST });
const out = {};
for (const form of ['bare', 'fenced', 'tagged', 'python_tag', 'pythonic']) {
  const stream = await client.chat({
    model,
    messages: [{ role: 'user', content: `Weather and time in Paris? form=${form}` }],
    tools,
    stream: true,
  });
  let content = '';
  const calls = [];
  for await (const part of stream) {
    content += part.message.content;
    for (const c of part.message.tool_calls ?? []) {
      calls.push({ name: c.function.name, arguments: c.function.arguments });
    }
  }
  out[form] = { content, calls };
}
console.log(JSON.stringify(out));
