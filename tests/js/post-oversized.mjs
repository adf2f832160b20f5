// Posts a createMessage whose body is larger than the server's limit, with Node's own fetch
// (undici), the way a Node client or a browser-like one would; run by tests/test_body_limit.py.
// Usage: node post-oversized.mjs URL BYTES TRIES [declared|chunked]
// Prints one JSON line per try: {"status": 413, "body": {...}} or {"error": "ECONNRESET ..."}.

const [url, bytes, tries, mode = "declared"] = process.argv.slice(2);
const size = Number(bytes);

function payload() {
  const query = "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { id } }";
  const head = JSON.stringify({ query, variables: { r: "1", b: "" } }).slice(0, -3);
  return `${head}"${"x".repeat(Math.max(0, size - head.length - 3))}"}}`;
}

function chunked(text) {
  const data = new TextEncoder().encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= data.length) {
        controller.close();
        return;
      }
      controller.enqueue(data.subarray(offset, offset + 65536));
      offset += 65536;
    },
  });
}

const text = payload();
for (let i = 0; i < Number(tries); i++) {
  const init = { method: "POST", headers: { "content-type": "application/json" } };
  if (mode === "chunked") Object.assign(init, { body: chunked(text), duplex: "half" });
  else init.body = text;
  try {
    const response = await fetch(url, init);
    const body = await response.json();
    console.log(JSON.stringify({ status: response.status, connection: response.headers.get("connection"), body }));
  } catch (error) {
    const cause = error.cause ? ` ${error.cause.code ?? ""} ${error.cause.message ?? ""}` : "";
    console.log(JSON.stringify({ error: `${error.message}${cause}` }));
  }
}
