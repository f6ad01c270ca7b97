// Drives predcache with the official openai client (node): embeddings twice (the second
// must come from the cache, byte for byte the same data), then a streamed chat completion
// read event by event, then a deterministic one twice (the second replayed from the
// cache). Prints one JSON line with what it saw; the test judges it.
// usage: node openai_check.js BASE_URL
const OpenAI = require("openai");

async function main() {
  const client = new OpenAI({ baseURL: process.argv[2], apiKey: "test-key", maxRetries: 0 });
  const out = { embeddings: [], stream: [] };
  for (let i = 0; i < 2; i++) {
    const { data, response } = await client.embeddings
      .create({ model: "e5", input: ["a cat", "a dog"], encoding_format: "float" })
      .withResponse();
    out.embeddings.push({
      xcache: response.headers.get("x-cache"),
      vectors: data.data.map((d) => d.embedding),
    });
  }
  const stream = await client.chat.completions.create({
    model: "m",
    stream: true,
    messages: [{ role: "user", content: "hello" }],
  });
  for await (const chunk of stream) {
    out.stream.push(chunk.choices[0].delta.content);
  }
  // A deterministic streamed completion (temperature 0), twice: the second is replayed
  // from the cache, and the client must read it as it read the first.
  out.replay = [];
  for (let i = 0; i < 2; i++) {
    const { data, response } = await client.chat.completions
      .create({
        model: "m",
        stream: true,
        temperature: 0,
        messages: [{ role: "user", content: "say it again" }],
      })
      .withResponse();
    const chunks = [];
    for await (const chunk of data) chunks.push(chunk);
    out.replay.push({ xcache: response.headers.get("x-cache"), chunks });
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
