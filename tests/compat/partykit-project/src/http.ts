// What the twins answer to an HTTP method they do not serve, as the Rust parties do.
export const methodNotAllowed = (allow = "GET, HEAD") =>
  new Response("Method not allowed", {
    status: 405,
    headers: { "content-type": "text/plain; charset=utf-8", allow },
  });
