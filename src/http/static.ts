/**
 * @module The web client's static files (`web/`), served as they are: no build step. Only plain
 * file names with a known extension are served, so no path can leave the folder, and every answer
 * carries its content type and a validator.
 */
import { type Context, Hono } from "hono";

const CONTENT_TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  ico: "image/x-icon",
  webmanifest: "application/manifest+json",
};

/**
 * The files are not fingerprinted, so a browser must not run a stale copy after a deploy: it keeps
 * them but asks each time (`no-cache`), and the `ETag` makes the unchanged answer a bodyless 304.
 */
const CACHE_CONTROL = "no-cache";

/** Routes `GET /` (index.html) and `GET /<name>.<ext>` for the files in `root`. */
export function staticRoutes(root: URL = new URL("../../web/", import.meta.url)): Hono {
  const web = new Hono();
  web.get("/", (c) => serveFile(c, root, "index.html"));
  web.get("/:file{[A-Za-z0-9_-][A-Za-z0-9_.-]*\\.[a-z]+}", (c) => {
    return serveFile(c, root, c.req.param("file"));
  });
  return web;
}

async function serveFile(c: Context, root: URL, name: string): Promise<Response> {
  const type = CONTENT_TYPES[name.slice(name.lastIndexOf(".") + 1)];
  if (type === undefined || name.includes("..")) return c.notFound();
  const url = new URL(name, root);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(url);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return c.notFound();
    throw error;
  }
  if (!info.isFile) return c.notFound();
  const etag = `W/"${info.size.toString(36)}-${(info.mtime?.getTime() ?? 0).toString(36)}"`;
  const headers = { "cache-control": CACHE_CONTROL, etag };
  if (matches(c.req.header("if-none-match"), etag)) return c.body(null, 304, headers);
  let body: Uint8Array<ArrayBuffer>;
  try {
    body = await Deno.readFile(url);
  } catch (error) {
    // Deleted between the stat and the read.
    if (error instanceof Deno.errors.NotFound) return c.notFound();
    throw error;
  }
  return c.body(body, 200, { ...headers, "content-type": type });
}

/** `If-None-Match` holds a list of tags or `*`; weak comparison, as RFC 9110 asks for GET. */
function matches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === "*") return true;
  const bare = (tag: string) => tag.trim().replace(/^W\//, "");
  return header.split(",").some((tag) => bare(tag) === bare(etag));
}
