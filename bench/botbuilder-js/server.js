// botbuilder-js baseline of the endpoint benchmark: CloudAdapter on a plain Node `http` server.
//
//   node server.js <port> <openid-metadata-url>
//
// Configured like chatwarden: a single-tenant app registration (MicrosoftAppId / Password /
// TenantId) and the channel OpenID metadata served by the benchmark's local server. The turn
// handler does nothing, so a messageReaction activity is answered without any outbound call.
'use strict';

const http = require('http');
const { ActivityHandler, CallerIdConstants, CloudAdapter, ConfigurationBotFrameworkAuthentication } = require('botbuilder');
const { AuthenticationConstants } = require('botframework-connector');

const port = Number(process.argv[2]);
const metadataUrl = process.argv[3];
if (!port || !metadataUrl) {
    console.error('usage: node server.js <port> <openid-metadata-url>');
    process.exit(2);
}

const appId = process.env.MICROSOFT_APP_ID;
const tenantId = process.env.MICROSOFT_APP_TENANT_ID;

// Setting any endpoint makes BotFrameworkAuthenticationFactory build a
// ParameterizedBotFrameworkAuthentication from exactly these values, so every one of them is
// given: the public-cloud constants, except the channel (and emulator) OpenID metadata URL.
const auth = new ConfigurationBotFrameworkAuthentication({
    MicrosoftAppId: appId,
    MicrosoftAppPassword: process.env.MICROSOFT_APP_PASSWORD,
    MicrosoftAppTenantId: tenantId,
    MicrosoftAppType: 'SingleTenant',
    ValidateAuthority: true,
    ToChannelFromBotLoginUrl: `${AuthenticationConstants.ToChannelFromBotLoginUrlPrefix}${tenantId}`,
    ToChannelFromBotOAuthScope: AuthenticationConstants.ToChannelFromBotOAuthScope,
    ToBotFromChannelTokenIssuer: AuthenticationConstants.ToBotFromChannelTokenIssuer,
    OAuthUrl: AuthenticationConstants.OAuthUrl,
    ToBotFromChannelOpenIdMetadataUrl: metadataUrl,
    ToBotFromEmulatorOpenIdMetadataUrl: metadataUrl,
    CallerId: CallerIdConstants.PublicAzureChannel,
});
const adapter = new CloudAdapter(auth);
adapter.onTurnError = async () => {};

// Does nothing on any activity.
const bot = new ActivityHandler();

// The small response surface CloudAdapter.process needs (what express/restify provide).
function wrap(res) {
    return {
        socket: res.socket,
        header(name, value) {
            res.setHeader(name, value);
        },
        status(code) {
            res.statusCode = code;
        },
        send(body) {
            if (body === undefined || body === null) return;
            if (typeof body === 'string' || Buffer.isBuffer(body)) {
                res.setHeader('Content-Type', 'text/plain; charset=utf-8');
                res.write(body);
            } else {
                res.setHeader('Content-Type', 'application/json');
                res.write(JSON.stringify(body));
            }
        },
        end() {
            res.end();
        },
    };
}

const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/api/messages') {
        res.statusCode = 404;
        res.end();
        return;
    }
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
        try {
            req.body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch (err) {
            res.statusCode = 400;
            res.end();
            return;
        }
        adapter.process(req, wrap(res), (context) => bot.run(context)).catch(() => {
            if (!res.headersSent) res.statusCode = 500;
            res.end();
        });
    });
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1');
