// The OpenID Connect provider the integration tests sign in with (tests/api/oidc.rs):
// panva's oidc-provider (OpenID Certified), on a loopback port of its own choosing, printed as
// the first line of standard output ("listening <port>"). It stops when its standard input
// closes, so it never outlives the test binary that started it.
//
// What a test can set up, over plain HTTP on the same port:
// - clients, by the standard Dynamic Client Registration (`POST /reg`), one per bp-auth under
//   test, with that server's exact redirect URI;
// - accounts, by `POST /__test/accounts {"sub", "email", "email_verified", "tamper"}`: the login
//   form of the development interactions takes the `sub` as its login (any password);
// - `tamper` makes this provider misbehave for that account's ID tokens at the token endpoint,
//   after it issued a genuine one: "resign" re-signs it with another key under the same `kid`,
//   "kid" re-signs it with another key under a `kid` the JWKS does not have, "nonce" replaces
//   the `nonce` and signs with the genuine key (only the nonce is wrong).

import http from 'node:http';
import { randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import * as jose from 'jose';

const accounts = new Map();

async function signingKey(kid) {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  return { ...(await jose.exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}

const genuine = await signingKey(`genuine-${randomUUID()}`);
const forger = await jose.importJWK(await signingKey('forger'), 'RS256');
const genuineKey = await jose.importJWK(genuine, 'RS256');

function readJson(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      try { resolve(JSON.parse(body || '{}')); } catch (e) { reject(e); }
    });
    req.on('error', reject);
  });
}

async function tampered(idToken) {
  const header = jose.decodeProtectedHeader(idToken);
  const claims = jose.decodeJwt(idToken);
  const mode = accounts.get(claims.sub)?.tamper;
  switch (mode) {
    case 'resign':
      return new jose.SignJWT(claims).setProtectedHeader(header).sign(forger);
    case 'kid':
      return new jose.SignJWT(claims)
        .setProtectedHeader({ ...header, kid: `unknown-${randomUUID()}` })
        .sign(forger);
    case 'nonce':
      return new jose.SignJWT({ ...claims, nonce: `forged-${randomUUID()}` })
        .setProtectedHeader(header)
        .sign(genuineKey);
    default:
      return idToken;
  }
}

const server = http.createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [genuine] },
  cookies: { keys: [randomUUID()] },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
  },
  // Every client must use PKCE, as bp-auth always does (S256 is the only method offered).
  pkce: { required: () => true },
  // The claims in the ID token itself, as Google sends them, not only at the userinfo endpoint.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  async findAccount(ctx, sub) {
    const account = accounts.get(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: account.email,
          email_verified: account.email_verified,
          name: account.name,
        };
      },
    };
  },
});

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: await tampered(ctx.body.id_token) };
  }
});

const callback = provider.callback();
server.on('request', async (req, res) => {
  if (req.method === 'POST' && req.url === '/__test/accounts') {
    try {
      const a = await readJson(req);
      accounts.set(String(a.sub), {
        email: a.email ?? undefined,
        email_verified: Boolean(a.email_verified),
        name: a.name ?? undefined,
        tamper: a.tamper ?? undefined,
      });
      res.writeHead(204).end();
    } catch (e) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end(String(e));
    }
    return;
  }
  callback(req, res);
});

// The test harness reads the port from the first line; losing stdout later must not stop us.
process.stdout.on('error', () => {});
process.stdout.write(`listening ${port}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
