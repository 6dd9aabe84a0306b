// Teams SDK (JavaScript) peer of the endpoint benchmark: @microsoft/teams.apps `App` with its
// default HTTP server (ExpressAdapter + HttpServer, which validates every inbound token).
//
//   node server.js <port> <openid-metadata-url>
//
// Configured like chatwarden: a single-tenant app registration (MICROSOFT_APP_ID / _PASSWORD /
// _TENANT_ID) and the channel keys of the benchmark's local OpenID metadata, given through the
// SDK's documented sovereign-cloud option: `cloud: withOverrides(PUBLIC, { openIdMetadataUrl })`.
// No handler is registered, so a messageReaction activity is answered 200 and nothing else runs.
//
// Nothing of the SDK is patched. What it does, checked in node_modules/@microsoft/ (2.1.0):
//
// - Key URL. teams.apps/dist/middleware/auth/inbound-activity-token-validator.js: the
//   `InboundActivityTokenValidator` constructor builds its `JwtValidator` with the JWKS URL
//   `openIdMetadataToKeysUri(cloud.openIdMetadataUrl)`, which replaces a trailing
//   `/openidconfiguration` by `/keys`; the metadata document itself is never fetched. For
//   http://127.0.0.1:PORT/v1/.well-known/openidconfiguration that is
//   http://127.0.0.1:PORT/v1/.well-known/keys (login.botframework.com's layout), so
//   bench/make_fixtures.py serves the same JWKS there as well as at the metadata's jwks_uri
//   (/keys), and this server checks at start-up that both URLs serve the same keys, so the SDK
//   validates against the keys the metadata names.
// - Checks. teams.apps/dist/middleware/auth/jwt-validator.js `JwtValidator.validateAccessToken()`:
//   jsonwebtoken.verify with RS256, audience (app id, api://botid-<id>, api://<id>), expiry and
//   not-before (300 s tolerance), then `performCustomValidations()`: issuer exactly
//   `cloud.tokenIssuer` (https://api.botframework.com) and the token's serviceurl claim equal to
//   the activity's serviceUrl. The jwks-rsa client is created once per validator and caches keys.
// - Answers. teams.apps/dist/http/http-server.js `HttpServer.authorize()`/`handleRequest()`: a
//   missing header or any failed validation is 401; the activity is then processed and the
//   handler's status (200 when no route matches) is returned.
// - No outbound call. teams.apps/dist/app.js: the constructor and `start()` acquire no token (the
//   TokenManager is only asked when an API/Graph client sends), and `shouldFetchUserToken()` is
//   false without legacy `oauth` options; teams.apps/dist/app.process.js
//   `ActivityProcessor.process()` builds API/Graph clients whose tokens are fetched lazily, and
//   with no route nothing sends. (Checked with a socket trace: the only connections are to the
//   local metadata server, three from this file at start-up and one key fetch by the SDK.)
// - `app.start(port)` (teams.apps/dist/http/express-adapter.js `start()`) listens on every
//   interface; the benchmark connects to 127.0.0.1.
// - The @microsoft/teams.* 2.1.0 packages declare engines.node >=22.12.0 (npm only warns); this
//   peer was checked on Node 20.20.2, where it runs unchanged.
'use strict';

const { App } = require('@microsoft/teams.apps');
const { PUBLIC, withOverrides } = require('@microsoft/teams.api');

const port = Number(process.argv[2]);
const metadataUrl = process.argv[3];
if (!port || !metadataUrl) {
    console.error('usage: node server.js <port> <openid-metadata-url>');
    process.exit(2);
}

async function keysAt(url) {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    return JSON.stringify((await res.json()).keys);
}

async function main() {
    // The URL the SDK will take the keys from (see above) must serve the metadata's keys.
    const res = await fetch(metadataUrl);
    if (!res.ok) throw new Error(`OpenID metadata ${metadataUrl}: HTTP ${res.status}`);
    const { jwks_uri: jwksUri } = await res.json();
    const derived = metadataUrl.replace(/\/openidconfiguration$/, '/keys');
    if ((await keysAt(derived)) !== (await keysAt(jwksUri))) {
        throw new Error(`${derived} (the SDK's key URL) does not serve the keys of ${jwksUri}`);
    }

    const app = new App({
        clientId: process.env.MICROSOFT_APP_ID,
        clientSecret: process.env.MICROSOFT_APP_PASSWORD,
        tenantId: process.env.MICROSOFT_APP_TENANT_ID,
        cloud: withOverrides(PUBLIC, { openIdMetadataUrl: metadataUrl }),
    });
    await app.start(port);
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
