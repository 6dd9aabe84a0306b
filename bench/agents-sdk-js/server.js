// Microsoft 365 Agents SDK (JavaScript) peer of the endpoint benchmark: the SDK's own Express host
// (`startServer` from @microsoft/agents-hosting-express) with its JWT middleware and CloudAdapter.
//
//   node server.js <port> <openid-metadata-url>
//
// Configured like chatwarden: a single-tenant app registration (MICROSOFT_APP_ID / _PASSWORD /
// _TENANT_ID), issuer and service URL validation on, and the channel keys from the benchmark's
// local OpenID metadata. The handler is an empty ActivityHandler (as botbuilder-js's), so a
// messageReaction activity is answered 200 without any outbound call. startServer() listens on
// every interface (it takes no host); the benchmark connects to 127.0.0.1.
//
// Two things the SDK cannot be configured to do are overridden below, each at one place, before
// the server starts listening (sources: node_modules/@microsoft/agents-hosting/dist/src/...):
//
// 1. The key URL. auth/jwt-middleware.js `verifyToken()` takes the JWKS URL from
//    `buildJwksUri(iss, authConfig)`, which hard-codes
//    https://login.botframework.com/v1/.well-known/keys for iss https://api.botframework.com (no
//    option, no environment variable, and no OpenID metadata lookup), and then asks
//    `getJwksClient(jwksUri)` for the process-wide jwks-rsa client cached under that URL
//    (`jwksClients` Map). We create that cached client ourselves through the same
//    `getJwksClient()` and point its `options.jwksUri` (read by jwks-rsa's
//    `JwksClient.getKeys()`, jwks-rsa/src/JwksClient.js, on every key fetch) at the `jwks_uri` of
//    the benchmark's OpenID metadata. Everything else is the SDK's own path: jsonwebtoken.verify
//    with RS256, the audience, expiry, and (validateIssuer: true) the issuer allow-list.
//
// 2. The outbound token. cloudAdapter.js `CloudAdapter.process()` calls
//    `createConnectorClientWithIdentity()` on every activity, which calls
//    `tokenProvider.getAccessToken('https://api.botframework.com')`
//    (auth/msal/msalTokenProvider.js `MsalTokenProvider.getAccessToken()`): a hit in the
//    process-wide `_accessTokenCache` returns at once, a miss runs MSAL's client-credentials grant
//    against Entra ID (`acquireAccessTokenViaSecret()` -> msal-node
//    `ConfidentialClientApplication.acquireTokenByClientCredential()`). There is no Entra ID here,
//    so that msal-node method is replaced by a stand-in that returns a dummy access token valid for
//    one hour (what Entra ID issues), and the cache is warmed with one `getAccessToken()` call at
//    start-up (the SDK caches the token itself, `cacheAccessToken()`, until 5 minutes before its
//    exp). Every activity then takes the SDK's real warm path (cache key, lookup, connector client
//    built with the cached token) and makes no outbound call; the stand-in logs every call, so a
//    cold cache during the run would show in the log (one line at start-up is expected).
'use strict';

const path = require('path');
const { ActivityHandler, MsalTokenProvider, buildJwksUri, getAuthConfigWithDefaults } = require('@microsoft/agents-hosting');
const { startServer } = require('@microsoft/agents-hosting-express');

const port = Number(process.argv[2]);
const metadataUrl = process.argv[3];
if (!port || !metadataUrl) {
    console.error('usage: node server.js <port> <openid-metadata-url>');
    process.exit(2);
}

// Modules the SDK uses but does not export, loaded from the SDK's own location (the same module
// instances: the package "exports" map only hides them from bare deep imports).
const hostingDir = path.dirname(require.resolve('@microsoft/agents-hosting'));
const { getJwksClient } = require(path.join(hostingDir, 'auth', 'jwt-middleware.js'));
const { ConfidentialClientApplication } = require(require.resolve('@azure/msal-node', { paths: [hostingDir] }));

const BOT_FRAMEWORK_ISSUER = 'https://api.botframework.com';
// The scope CloudAdapter.createConnectorClientWithIdentity() asks for when the inbound token has
// no azp/appid claim (Bot Connector tokens have none).
const CONNECTOR_SCOPE = 'https://api.botframework.com';

// Issuer validation is off unless asked for (auth/jwt-middleware.js `verifyToken()`:
// `if (authConfig.validateIssuer) validateIssuer(...)`); chatwarden checks the issuer, so on.
const authConfig = {
    clientId: process.env.MICROSOFT_APP_ID,
    clientSecret: process.env.MICROSOFT_APP_PASSWORD,
    tenantId: process.env.MICROSOFT_APP_TENANT_ID,
    validateIssuer: true,
};
// CloudAdapter compares the token's serviceurl claim with the activity's serviceUrl host on every
// activity and by default only logs a mismatch (cloudAdapter.js `validateServiceUrl()`); its
// documented switch (CloudAdapterOptions, "Recommended for production"), read from the
// environment when startServer constructs the adapter, makes a mismatch a 400, as chatwarden
// refuses one.
process.env.CloudAdapterOptions__validateServiceUrl = 'true';

// Override 2: the stand-in for Entra ID's client-credentials grant (see the top of the file).
let tokenGrants = 0;
ConfidentialClientApplication.prototype.acquireTokenByClientCredential = async function (request) {
    tokenGrants += 1;
    console.error(`bench: outbound token stand-in called (${tokenGrants}) for ${request.scopes.join(' ')}`);
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    return {
        accessToken: `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ aud: CONNECTOR_SCOPE, exp })}.`,
        expiresOn: new Date(exp * 1000),
        tokenType: 'Bearer',
    };
};

async function main() {
    const config = getAuthConfigWithDefaults(authConfig);
    const connection = config.connections.values().next().value;

    // Override 1: the key URL, from the benchmark's OpenID metadata (see the top of the file).
    const res = await fetch(metadataUrl);
    if (!res.ok) throw new Error(`OpenID metadata ${metadataUrl}: HTTP ${res.status}`);
    const { jwks_uri: jwksUri } = await res.json();
    if (!jwksUri) throw new Error(`OpenID metadata ${metadataUrl} has no jwks_uri`);
    getJwksClient(buildJwksUri(BOT_FRAMEWORK_ISSUER, connection)).options.jwksUri = jwksUri;

    // Warm the SDK's access-token cache with the connector scope (override 2).
    await new MsalTokenProvider(connection).getAccessToken(CONNECTOR_SCOPE);

    // Does nothing on any activity.
    startServer(new ActivityHandler(), { authConfig, port });
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
