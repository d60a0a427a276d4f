/**
 * Requests from web pages, refused on every route of evalgap's loopback HTTP servers (`run`'s and
 * `monitor`'s metrics ports, `evalgap receive`): a page in a browser on the same machine can reach 127.0.0.1, and a
 * DNS-rebinding page can even read the answers as its own origin. Such a request is told by
 * - a `Host` other than the address and port the socket is bound to (a rebinding page sends its
 *   own name; `localhost:<port>` is accepted where `allowLocalhost`, since no page can rebind it);
 * - an `Origin` header (browsers send it on cross-origin and on POST requests);
 * - a `Sec-Fetch-Site` other than `none` (browsers send it on every request a page makes).
 * Prometheus, curl and Node's fetch send none of these. Checked before anything is read.
 */
import type http from 'node:http';

/** The `Host` a client of this socket must send: the bound address and port. */
export function boundHost(req: http.IncomingMessage): string {
  const a = req.socket.localAddress ?? '';
  return `${a.includes(':') ? `[${a}]` : a}:${req.socket.localPort}`;
}

/** Why the request looks browser-originated (a message for the 403), or null. */
export function browserRefusal(req: http.IncomingMessage, opts: { allowLocalhost?: boolean } = {}): string | null {
  const host = req.headers.host;
  const bound = boundHost(req);
  if (host !== bound && !(opts.allowLocalhost && host === `localhost:${req.socket.localPort}`)) {
    return `refused: the Host header must be ${bound}${opts.allowLocalhost ? ` or localhost:${req.socket.localPort}` : ''}`;
  }
  if (req.headers.origin !== undefined) return 'refused: requests from web pages (with an Origin header) are not served';
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'none') return 'refused: requests from web pages (Sec-Fetch-Site) are not served';
  return null;
}

/**
 * Answers 403 (JSON `{"error": …}`) to a browser-originated request, leaving its body unread, and
 * returns true; returns false for any other request, untouched.
 */
export function refuseBrowserRequest(req: http.IncomingMessage, res: http.ServerResponse, opts: { allowLocalhost?: boolean } = {}): boolean {
  const refused = browserRefusal(req, opts);
  if (!refused) return false;
  res.statusCode = 403;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ error: refused }));
  req.resume();
  return true;
}
