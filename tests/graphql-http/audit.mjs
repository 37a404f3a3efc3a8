// Runs every server audit of graphql-http (the GraphQL over HTTP conformance audit) against a
// running autos and prints one JSON line per audit:
//   {"id":"4655","name":"MUST accept ...","status":"ok"}
//   {"id":"9ABE","name":"SHOULD ...","status":"warn","reason":"...","response":{...}}
// status: ok, or for a failed audit `error` (MUST), `warn` (SHOULD) or `notice` (MAY), as
// graphql-http grades them. An audit that throws outside its assertions is reported as
// `error` with a reason starting "fatal:".
//
// usage: node audit.mjs URL KEY   (URL: http://127.0.0.1:PORT/graphql; KEY: an autos API key,
// sent as `Authorization: Bearer KEY` on every request). Exits 0 once every audit ran (the
// verdict is the caller's), 2 on bad usage.
import { serverAudits } from 'graphql-http';

const [url, key] = process.argv.slice(2);
if (!url || !key) {
  console.error('usage: node audit.mjs URL KEY');
  process.exit(2);
}

// The audit's requests, with the key added (headers given as a plain object or as Headers).
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${key}`);
  return fetch(input, { ...init, headers });
};

// What a failed audit got, to tell why without rerunning it.
async function describe(response) {
  if (!response || typeof response.clone !== 'function') return undefined;
  let body;
  try {
    body = await response.clone().text();
  } catch {
    body = undefined; // already read by the audit
  }
  return {
    status: response.status,
    contentType: response.headers.get('content-type'),
    body: body === undefined ? undefined : body.slice(0, 500),
  };
}

for (const { id, name, fn } of serverAudits({ url, fetchFn })) {
  let line;
  try {
    const result = await fn();
    line = { id: result.id, name: result.name, status: result.status };
    if (result.status !== 'ok') {
      line.reason = result.reason;
      line.response = await describe(result.response);
    }
  } catch (err) {
    line = { id, name, status: 'error', reason: `fatal: ${err?.stack ?? err}` };
  }
  console.log(JSON.stringify(line));
}
